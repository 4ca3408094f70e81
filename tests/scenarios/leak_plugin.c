/*
 * libleak_plugin.so: a plugin whose init function creates a process-wide singleton stored in a
 * static of the plugin and never destroyed, so every dlclose orphans it.
 */
#include <stdlib.h>
#include <string.h>

#define SINGLETON_SIZE 8192

static char *singleton;

__attribute__((noinline)) char *plugin_singleton_create(void)
{
    char *created = malloc(SINGLETON_SIZE);
    if (created == NULL)
        abort();
    memset(created, 0x5a, SINGLETON_SIZE);
    return created;
}

int plugin_init(void)
{
    if (singleton == NULL)
        singleton = plugin_singleton_create();
    return 0;
}

unsigned plugin_work(unsigned n)
{
    singleton[n % SINGLETON_SIZE] = (char)n;
    return (unsigned char)singleton[(n * 7) % SINGLETON_SIZE];
}

unsigned long plugin_singleton_size(void)
{
    return SINGLETON_SIZE;
}

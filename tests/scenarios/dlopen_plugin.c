/*
 * dlopen_plugin: a host that loads libleak_plugin.so, initialises it, uses it for about 100 ms
 * and unloads it, over and over; the plugin's singleton is orphaned by every dlclose.
 * The plugin's path is argv[2], or libleak_plugin.so beside this executable.
 */
#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "scenario.h"

#define WORK_TICKS 10

static void plugin_path(int argc, char **argv, char *path, size_t size)
{
    if (argc > 2) {
        snprintf(path, size, "%s", argv[2]);
        return;
    }
    ssize_t length = readlink("/proc/self/exe", path, size - 1);
    if (length < 0) {
        perror("readlink /proc/self/exe");
        exit(1);
    }
    path[length] = '\0';
    char *slash = strrchr(path, '/');
    if (slash == NULL || (size_t)(slash - path) + sizeof("/libleak_plugin.so") > size) {
        fprintf(stderr, "cannot place the plugin beside %s\n", path);
        exit(1);
    }
    strcpy(slash, "/libleak_plugin.so");
}

static void *symbol(void *plugin, const char *name)
{
    void *address = dlsym(plugin, name);
    if (address == NULL) {
        fprintf(stderr, "dlsym %s: %s\n", name, dlerror());
        exit(1);
    }
    return address;
}

int main(int argc, char **argv)
{
    char path[PATH_MAX];
    struct ticker ticker;
    unsigned long long leaked = 0;
    unsigned long checksum = 0;
    int loaded_ticks = 0;
    void *plugin = NULL;
    unsigned (*plugin_work)(unsigned) = NULL;

    plugin_path(argc, argv, path, sizeof(path));
    ticker_start(&ticker, scenario_seconds(argc, argv), 10 * 1000 * 1000);
    while (ticker_wait(&ticker)) {
        if (plugin == NULL) {
            plugin = dlopen(path, RTLD_NOW | RTLD_LOCAL);
            if (plugin == NULL) {
                fprintf(stderr, "dlopen: %s\n", dlerror());
                return 1;
            }
            int (*plugin_init)(void) = (int (*)(void))symbol(plugin, "plugin_init");
            unsigned long (*singleton_size)(void) =
                (unsigned long (*)(void))symbol(plugin, "plugin_singleton_size");
            plugin_work = (unsigned (*)(unsigned))symbol(plugin, "plugin_work");
            if (plugin_init() != 0) {
                fprintf(stderr, "plugin_init failed\n");
                return 1;
            }
            leaked += singleton_size();
            loaded_ticks = 0;
        }
        checksum += plugin_work((unsigned)checksum);
        if (++loaded_ticks == WORK_TICKS) {
            if (dlclose(plugin) != 0) {
                fprintf(stderr, "dlclose: %s\n", dlerror());
                return 1;
            }
            if (dlopen(path, RTLD_NOW | RTLD_NOLOAD) != NULL) {
                fprintf(stderr, "%s stayed loaded after dlclose\n", path);
                return 1;
            }
            plugin = NULL;
        }
    }
    if (plugin != NULL && dlclose(plugin) != 0) {
        fprintf(stderr, "dlclose: %s\n", dlerror());
        return 1;
    }
    SCENARIO_ESCAPE(&checksum);
    scenario_summary("dlopen_plugin", "plugin_singleton_create", leaked);
    return 0;
}

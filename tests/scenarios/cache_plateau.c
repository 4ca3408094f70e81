/*
 * cache_plateau: a bounded cache of 4 KiB entries that fills to 2 MiB in about 1.5 s and then
 * evicts (frees) its oldest entry on every insert, so its memory stays flat. Not a leak.
 */
#include <stdlib.h>
#include <string.h>

#include "scenario.h"

#define ENTRY_SIZE 4096
#define CAPACITY 512

struct cache {
    char *entries[CAPACITY];
    unsigned oldest;
    unsigned count;
};

static struct cache cache;

__attribute__((noinline)) static void cache_insert(unsigned key)
{
    char *entry = malloc(ENTRY_SIZE);
    if (entry == NULL)
        abort();
    memset(entry, (int)(key & 0xff), ENTRY_SIZE);
    if (cache.count == CAPACITY) {
        free(cache.entries[cache.oldest]);
        cache.entries[cache.oldest] = entry;
        cache.oldest = (cache.oldest + 1) % CAPACITY;
    } else {
        cache.entries[(cache.oldest + cache.count) % CAPACITY] = entry;
        cache.count++;
    }
}

int main(int argc, char **argv)
{
    struct ticker ticker;
    unsigned key = 0;

    /* 512 inserts, one every 3 ms, fill the cache in 1.536 s. */
    ticker_start(&ticker, scenario_seconds(argc, argv), 3 * 1000 * 1000);
    while (ticker_wait(&ticker))
        cache_insert(key++);
    scenario_summary("cache_plateau", NULL, 0);
    return 0;
}

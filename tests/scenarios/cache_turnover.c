/*
 * cache_turnover: a cache of 4096 entries of 4 KiB (16 MiB), filled in its first 2 s, then kept
 * full: every 5 ms the oldest entry is freed and a new one allocated in its place (by the same
 * code that filled it), so its memory is flat and the whole cache turns over in about 20 s. With
 * a second argument `leak`, a request handler beside it also leaks a 4 KiB block every 10 ms
 * (400 KiB/s) once the cache is full.
 */
#include <stdlib.h>
#include <string.h>

#include "scenario.h"

#define ENTRY_SIZE 4096
#define CAPACITY 4096

static char *entries[CAPACITY];
static unsigned oldest;
static unsigned count;

/* Adds an entry; once the cache is full, the oldest entry makes room for it: the code that
 * frees is the code that allocates. */
__attribute__((noinline)) static void cache_insert(unsigned key)
{
    char *entry = malloc(ENTRY_SIZE);
    if (entry == NULL)
        abort();
    memset(entry, (int)(key & 0xff), ENTRY_SIZE);
    if (count == CAPACITY) {
        free(entries[oldest]);
        entries[oldest] = entry;
        oldest = (oldest + 1) % CAPACITY;
    } else {
        entries[count++] = entry;
    }
}

__attribute__((noinline)) static void leak_block(unsigned n)
{
    char *block = malloc(ENTRY_SIZE);
    if (block == NULL)
        abort();
    memset(block, (int)(n & 0xff) | 1, ENTRY_SIZE);
    SCENARIO_ESCAPE(block);
}

int main(int argc, char **argv)
{
    struct ticker ticker;
    int leak = argc > 2 && strcmp(argv[2], "leak") == 0;
    unsigned long long leaked = 0;
    unsigned key = 0;

    /* One call site for every insert: an entry every 0.5 ms until the cache is full, then one
     * every 5 ms (every tenth tick). */
    ticker_start(&ticker, scenario_seconds(argc, argv), 500 * 1000);
    for (unsigned tick = 0; ticker_wait(&ticker); tick++) {
        if (count < CAPACITY || tick % 10 == 0)
            cache_insert(key++);
        if (leak && count == CAPACITY && tick % 20 == 0) {
            leak_block(tick);
            leaked += ENTRY_SIZE;
        }
    }
    SCENARIO_ESCAPE(entries);
    scenario_summary("cache_turnover", leak ? "leak_block" : NULL, leaked);
    return 0;
}

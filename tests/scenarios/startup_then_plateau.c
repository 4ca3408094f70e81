/*
 * startup_then_plateau: a service warming up. It fills a 20 MiB table of 320 entries of 64 KiB,
 * one every 31.25 ms, in its first 10 s, then keeps replacing a random entry on every tick
 * (freed, then allocated and written again at the same size), so its memory stays flat with
 * churn. Not a leak.
 */
#include <stdlib.h>
#include <string.h>

#include "scenario.h"

#define ENTRY_SIZE (64 * 1024)
#define ENTRIES 320

static char *table[ENTRIES];

__attribute__((noinline)) static void table_fill(unsigned slot)
{
    table[slot] = malloc(ENTRY_SIZE);
    if (table[slot] == NULL)
        abort();
    memset(table[slot], (int)(slot & 0xff) | 1, ENTRY_SIZE);
}

__attribute__((noinline)) static void table_replace(unsigned slot)
{
    free(table[slot]);
    table_fill(slot);
}

int main(int argc, char **argv)
{
    struct ticker ticker;
    uint64_t rng = 11;
    unsigned filled = 0;

    ticker_start(&ticker, scenario_seconds(argc, argv), 31250 * 1000);
    while (ticker_wait(&ticker)) {
        if (filled < ENTRIES)
            table_fill(filled++);
        else
            table_replace(lcg_next(&rng) % ENTRIES);
    }
    scenario_summary("startup_then_plateau", NULL, 0);
    return 0;
}

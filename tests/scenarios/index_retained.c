/*
 * index_retained: builds an index of 131072 records of 256 B (32 MiB) when it starts, then drops
 * all but every 64th record (512 KiB stay live) and serves lookups from what is left. The freed
 * records lie between the kept ones, so the allocator can return none of that memory to the
 * system: the heap stays resident, its live allocations small and flat. Not a leak.
 */
#include <stdlib.h>
#include <string.h>

#include "scenario.h"

#define RECORD_SIZE 256
#define RECORDS 131072
#define KEEP_EVERY 64

static char *records[RECORDS];

__attribute__((noinline)) static void index_build(void)
{
    for (unsigned i = 0; i < RECORDS; i++) {
        records[i] = malloc(RECORD_SIZE);
        if (records[i] == NULL)
            abort();
        memset(records[i], (int)(i & 0xff), RECORD_SIZE);
    }
}

__attribute__((noinline)) static void index_prune(void)
{
    for (unsigned i = 0; i < RECORDS; i++) {
        if (i % KEEP_EVERY != 0) {
            free(records[i]);
            records[i] = NULL;
        }
    }
}

int main(int argc, char **argv)
{
    struct ticker ticker;
    unsigned long checksum = 0;
    unsigned n = 0;

    index_build();
    index_prune();
    ticker_start(&ticker, scenario_seconds(argc, argv), 10 * 1000 * 1000);
    while (ticker_wait(&ticker)) {
        checksum += (unsigned char)records[(n * KEEP_EVERY) % RECORDS][n % RECORD_SIZE];
        n++;
    }
    SCENARIO_ESCAPE(&checksum);
    scenario_summary("index_retained", NULL, 0);
    return 0;
}

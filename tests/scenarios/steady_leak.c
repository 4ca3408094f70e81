/*
 * steady_leak: an audit log that keeps a 4 KiB record of every 10 ms tick and never releases
 * it, beside short-lived scratch buffers that are freed within the tick.
 */
#include <stdlib.h>
#include <string.h>

#include "scenario.h"

#define RECORD_SIZE 4096
#define SCRATCH_PER_TICK 8

__attribute__((noinline)) static void leak_steady(unsigned tick)
{
    char *record = malloc(RECORD_SIZE);
    if (record == NULL)
        abort();
    memset(record, (int)(tick & 0xff), RECORD_SIZE);
    SCENARIO_ESCAPE(record);
}

__attribute__((noinline)) static void scratch_work(uint64_t *rng)
{
    for (int i = 0; i < SCRATCH_PER_TICK; i++) {
        size_t size = 64 + lcg_next(rng) % 960;
        char *scratch = malloc(size);
        if (scratch == NULL)
            abort();
        memset(scratch, i, size);
        SCENARIO_ESCAPE(scratch);
        free(scratch);
    }
}

int main(int argc, char **argv)
{
    struct ticker ticker;
    uint64_t rng = 1;
    unsigned long long leaked = 0;
    unsigned tick = 0;

    ticker_start(&ticker, scenario_seconds(argc, argv), 10 * 1000 * 1000);
    while (ticker_wait(&ticker)) {
        leak_steady(tick++);
        leaked += RECORD_SIZE;
        scratch_work(&rng);
    }
    scenario_summary("steady_leak", "leak_steady", leaked);
    return 0;
}

/*
 * churn: an allocator workout with random sizes of 16 to 4096 bytes in a ring of 64 live
 * buffers, each slot freed before it is reused, at a steady 4000 allocations per second.
 * Not a leak.
 */
#include <stdlib.h>
#include <string.h>

#include "scenario.h"

#define SLOTS 64
#define MIN_SIZE 16
#define MAX_SIZE 4096
#define PER_TICK 4

static char *ring[SLOTS];

__attribute__((noinline)) static void churn_replace(unsigned slot, size_t size)
{
    free(ring[slot]);
    ring[slot] = malloc(size);
    if (ring[slot] == NULL)
        abort();
    memset(ring[slot], (int)(slot & 0xff), size);
}

int main(int argc, char **argv)
{
    struct ticker ticker;
    uint64_t rng = 7;
    unsigned next_slot = 0;

    ticker_start(&ticker, scenario_seconds(argc, argv), 1000 * 1000);
    while (ticker_wait(&ticker)) {
        for (int i = 0; i < PER_TICK; i++) {
            size_t size = MIN_SIZE + lcg_next(&rng) % (MAX_SIZE - MIN_SIZE + 1);
            churn_replace(next_slot, size);
            next_slot = (next_slot + 1) % SLOTS;
        }
    }
    scenario_summary("churn", NULL, 0);
    return 0;
}

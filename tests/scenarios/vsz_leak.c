/*
 * vsz_leak: a region allocator that reserves 640 KiB of anonymous memory every 125 ms and never
 * touches or unmaps it: virtual memory grows by 5 MiB/s while resident memory stays flat. For
 * the daemon's VSZ-growth detection.
 */
#include <stdlib.h>
#include <sys/mman.h>

#include "scenario.h"

#define REGION_SIZE (640 * 1024)

__attribute__((noinline)) static void reserve_region(void)
{
    void *region = mmap(NULL, REGION_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                        -1, 0);
    if (region == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    SCENARIO_ESCAPE(region);
}

int main(int argc, char **argv)
{
    struct ticker ticker;
    unsigned long long leaked = 0;

    ticker_start(&ticker, scenario_seconds(argc, argv), 125 * 1000 * 1000);
    while (ticker_wait(&ticker)) {
        reserve_region();
        leaked += REGION_SIZE;
    }
    scenario_summary("vsz_leak", "reserve_region", leaked);
    return 0;
}

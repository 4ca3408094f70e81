/*
 * mmap_leak: a region allocator that maps 1 MiB of anonymous memory every 50 ms, touches only
 * its first page and never unmaps it; beside it, a 256 KiB scratch mapping per tick that is
 * unmapped in two halves, so partial unmaps must balance it to zero.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "scenario.h"

#define REGION_SIZE (1024 * 1024)
#define SCRATCH_SIZE (256 * 1024)

__attribute__((noinline)) static void map_region(unsigned n)
{
    char *region = mmap(NULL, REGION_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                        -1, 0);
    if (region == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    region[0] = (char)n;
    SCENARIO_ESCAPE(region);
}

__attribute__((noinline)) static void map_scratch(unsigned n)
{
    char *scratch = mmap(NULL, SCRATCH_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                         -1, 0);
    if (scratch == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    memset(scratch, (int)(n & 0xff), SCRATCH_SIZE);
    SCENARIO_ESCAPE(scratch);
    if (munmap(scratch, SCRATCH_SIZE / 2) != 0 ||
        munmap(scratch + SCRATCH_SIZE / 2, SCRATCH_SIZE / 2) != 0) {
        perror("munmap");
        exit(1);
    }
}

int main(int argc, char **argv)
{
    struct ticker ticker;
    unsigned long long regions = 0;

    ticker_start(&ticker, scenario_seconds(argc, argv), 50 * 1000 * 1000);
    while (ticker_wait(&ticker)) {
        map_region((unsigned)regions);
        regions++;
        map_scratch((unsigned)regions);
    }
    scenario_summary("mmap_leak", "map_region", regions * REGION_SIZE);
    return 0;
}

/*
 * aligned_leak: a buffer pool that takes cache-line and page aligned blocks, alternating
 * posix_memalign(64, 1000) and aligned_alloc(4096, 8192) every 20 ms, and never returns them.
 */
#include <stdlib.h>
#include <string.h>

#include "scenario.h"

#define SMALL_ALIGNMENT 64
#define SMALL_SIZE 1000
#define PAGE_ALIGNMENT 4096
#define PAGE_BLOCK_SIZE 8192

/* Returns the number of bytes it allocated. */
__attribute__((noinline)) static size_t aligned_leak(unsigned n)
{
    void *block;
    size_t size;

    if (n % 2 == 0) {
        size = SMALL_SIZE;
        if (posix_memalign(&block, SMALL_ALIGNMENT, SMALL_SIZE) != 0)
            abort();
    } else {
        size = PAGE_BLOCK_SIZE;
        block = aligned_alloc(PAGE_ALIGNMENT, PAGE_BLOCK_SIZE);
        if (block == NULL)
            abort();
    }
    memset(block, (int)(n & 0xff), size);
    SCENARIO_ESCAPE(block);
    return size;
}

int main(int argc, char **argv)
{
    struct ticker ticker;
    unsigned long long leaked = 0;
    unsigned n = 0;

    ticker_start(&ticker, scenario_seconds(argc, argv), 20 * 1000 * 1000);
    while (ticker_wait(&ticker))
        leaked += aligned_leak(n++);
    scenario_summary("aligned_leak", "aligned_leak", leaked);
    return 0;
}

/*
 * realloc_chain: a message assembler that starts a 64 B buffer and doubles it with realloc
 * until it holds 16 KiB, then loses the pointer; one chain every 20 ms.
 */
#include <stdlib.h>
#include <string.h>

#include "scenario.h"

#define FIRST_SIZE 64
#define FINAL_SIZE 16384

__attribute__((noinline)) static void grow_chain(unsigned n)
{
    size_t size = FIRST_SIZE;
    char *buf = malloc(size);
    if (buf == NULL)
        abort();
    memset(buf, (int)(n & 0xff), size);
    while (size < FINAL_SIZE) {
        size_t grown_size = size * 2;
        char *grown = realloc(buf, grown_size);
        if (grown == NULL)
            abort();
        memset(grown + size, (int)(n & 0xff), grown_size - size);
        buf = grown;
        size = grown_size;
    }
    SCENARIO_ESCAPE(buf);
}

int main(int argc, char **argv)
{
    struct ticker ticker;
    unsigned long long chains = 0;

    ticker_start(&ticker, scenario_seconds(argc, argv), 20 * 1000 * 1000);
    while (ticker_wait(&ticker)) {
        grow_chain((unsigned)chains);
        chains++;
    }
    scenario_summary("realloc_chain", "grow_chain", chains * FINAL_SIZE);
    return 0;
}

/*
 * rss_leak: a session table that keeps a 32 KiB record, written in full, every 125 ms and never
 * releases it: resident memory grows by 256 KiB/s. For the daemon's RSS-growth detection.
 */
#include <stdlib.h>
#include <string.h>

#include "scenario.h"

#define CHUNK_SIZE (32 * 1024)

__attribute__((noinline)) static void leak_rss_chunk(unsigned n)
{
    char *chunk = malloc(CHUNK_SIZE);
    if (chunk == NULL)
        abort();
    memset(chunk, (int)(n & 0xff) | 1, CHUNK_SIZE);
    SCENARIO_ESCAPE(chunk);
}

int main(int argc, char **argv)
{
    struct ticker ticker;
    unsigned long long leaked = 0;
    unsigned n = 0;

    ticker_start(&ticker, scenario_seconds(argc, argv), 125 * 1000 * 1000);
    while (ticker_wait(&ticker)) {
        leak_rss_chunk(n++);
        leaked += CHUNK_SIZE;
    }
    scenario_summary("rss_leak", "leak_rss_chunk", leaked);
    return 0;
}

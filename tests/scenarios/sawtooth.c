/*
 * sawtooth: a batcher that collects 100 records of 4 KiB over about 400 ms, then flushes and
 * frees the whole batch, over and over. Not a leak.
 */
#include <stdlib.h>
#include <string.h>

#include "scenario.h"

#define RECORD_SIZE 4096
#define BATCH_SIZE 100

struct batch {
    char *records[BATCH_SIZE];
    unsigned count;
};

static struct batch batch;

__attribute__((noinline)) static void batch_collect(unsigned n)
{
    char *record = malloc(RECORD_SIZE);
    if (record == NULL)
        abort();
    memset(record, (int)(n & 0xff), RECORD_SIZE);
    batch.records[batch.count++] = record;
}

__attribute__((noinline)) static void batch_flush(void)
{
    for (unsigned i = 0; i < batch.count; i++)
        free(batch.records[i]);
    batch.count = 0;
}

int main(int argc, char **argv)
{
    struct ticker ticker;
    unsigned n = 0;

    ticker_start(&ticker, scenario_seconds(argc, argv), 4 * 1000 * 1000);
    while (ticker_wait(&ticker)) {
        batch_collect(n++);
        if (batch.count == BATCH_SIZE)
            batch_flush();
    }
    scenario_summary("sawtooth", NULL, 0);
    return 0;
}

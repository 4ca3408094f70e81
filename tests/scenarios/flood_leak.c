/*
 * flood_leak: a service flooded with bad requests, whose error path leaks a 256 B record per
 * rejected request: idle for argv[2] seconds (default 0), then argv[3] rejected requests a second
 * (default 80000, about 20 MB/s of leak) until the run time (argv[1]) is over or the OOM killer
 * strikes. With argv[4] = BYTES, the same requests fill a cache of BYTES instead and stop there:
 * a fast but bounded burst, kept until the end.
 */
#include <string.h>

#include "scenario.h"

#define RECORD_SIZE 256
/* Requests are handled in batches, one batch a millisecond. */
#define BATCHES_PER_SECOND 1000

/* The error path: the rejection is recorded for a report that is never sent (leaked). */
__attribute__((noinline)) static char *record_rejection(unsigned long id)
{
    char *record = malloc(RECORD_SIZE);
    if (record == NULL)
        abort();
    memset(record, (int)(id & 0xff), RECORD_SIZE);
    return record;
}

/* A bounded cache of rejections, kept until the end. */
static char **cache;
static unsigned long cache_slots;
static unsigned long cached;

__attribute__((noinline)) static void handle_bad_request(unsigned long id)
{
    char *record = record_rejection(id);
    if (cache_slots == 0)
        SCENARIO_ESCAPE(record);
    else if (cached < cache_slots)
        cache[cached++] = record;
    else
        free(record);
}

static double argument(int argc, char **argv, int index, double fallback)
{
    if (argc <= index)
        return fallback;
    char *end = NULL;
    double value = strtod(argv[index], &end);
    if (end == argv[index] || *end != '\0' || value < 0.0) {
        fprintf(stderr, "usage: %s [SECONDS [IDLE_SECONDS [RATE [CACHE_BYTES]]]]\n", argv[0]);
        exit(2);
    }
    return value;
}

int main(int argc, char **argv)
{
    double seconds = scenario_seconds(argc, argv);
    double idle = argument(argc, argv, 2, 0.0);
    double rate = argument(argc, argv, 3, 80000.0);
    cache_slots = (unsigned long)(argument(argc, argv, 4, 0.0) / RECORD_SIZE);
    if (cache_slots > 0) {
        cache = calloc(cache_slots, sizeof(*cache));
        if (cache == NULL)
            abort();
    }
    struct ticker ticker;
    ticker_start(&ticker, idle, 100 * 1000 * 1000);
    while (ticker_wait(&ticker)) {
    }
    unsigned long per_batch = (unsigned long)(rate / BATCHES_PER_SECOND);
    unsigned long id = 0;
    ticker_start(&ticker, seconds - idle, 1000 * 1000 * 1000 / BATCHES_PER_SECOND);
    while (ticker_wait(&ticker)) {
        for (unsigned long i = 0; i < per_batch; i++)
            handle_bad_request(id++);
    }
    unsigned long long kept = cache_slots > 0 ? 0 : (unsigned long long)id * RECORD_SIZE;
    scenario_summary("flood_leak", cache_slots > 0 ? NULL : "record_rejection", kept);
    return 0;
}

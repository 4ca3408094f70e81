/*
 * wrapper_leak: a session store whose records come from an xmalloc-style wrapper (the pattern
 * of every C server: abort on failure, maybe count the bytes), so the culprit, `remember_session`,
 * is two frames above malloc; and a response cache whose copies come from a helper in a shared
 * library (libleak_helper.so: `helper_dup` -> `helper_alloc` -> malloc), so its culprit,
 * `cache_response`, is three frames up, through code of another object. Built without frame
 * pointers, as distribution packages are. Each leaks 2 KiB every 10 ms; beside them, scratch
 * buffers from the same wrapper are freed at once.
 */
#include <stdlib.h>
#include <string.h>

#include "leak_helper.h"
#include "scenario.h"

#define RECORD_SIZE 2048

static unsigned long long wrapped_bytes;

__attribute__((noinline)) static void *xmalloc(size_t size)
{
    void *block = malloc(size);
    if (block == NULL)
        abort();
    wrapped_bytes += size;
    return block;
}

__attribute__((noinline)) static void remember_session(unsigned id)
{
    char *record = xmalloc(RECORD_SIZE);
    memset(record, (int)(id & 0xff), RECORD_SIZE);
    SCENARIO_ESCAPE(record);
}

__attribute__((noinline)) static void cache_response(unsigned id)
{
    char body[RECORD_SIZE];
    memset(body, (int)(id & 0x7f), sizeof body);
    char *copy = helper_dup(body, sizeof body);
    SCENARIO_ESCAPE(copy);
}

__attribute__((noinline)) static void scratch(uint64_t *rng)
{
    size_t size = 64 + lcg_next(rng) % 512;
    char *buffer = xmalloc(size);
    memset(buffer, 1, size);
    SCENARIO_ESCAPE(buffer);
    free(buffer);
}

int main(int argc, char **argv)
{
    struct ticker ticker;
    uint64_t rng = 7;
    unsigned long long leaked = 0;
    unsigned id = 0;

    ticker_start(&ticker, scenario_seconds(argc, argv), 10 * 1000 * 1000);
    while (ticker_wait(&ticker)) {
        remember_session(id);
        cache_response(id);
        id++;
        leaked += RECORD_SIZE;
        scratch(&rng);
    }
    /* The summary names the wrapper, the allocator's direct caller; the tests look for the
     * culprits above it. */
    scenario_summary("wrapper_leak", "xmalloc", leaked);
    return 0;
}

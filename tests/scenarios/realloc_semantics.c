/*
 * realloc_semantics: every 50 ms, one call of each allocator entry point in an edge case whose
 * outcome is known, each from its own function, and leaks the result. It prints the usual
 * summary line (no single leak function) followed by one line with the exact bytes each
 * function leaked: {"sites":{"function":bytes,...}}.
 *
 * - keep_after_failed_realloc: malloc(1000), then a realloc that fails: the block stays
 *   allocated (at the malloc site).
 * - grow_realloc: malloc(100) then realloc to 5000: only the 5000 remain (realloc site).
 * - realloc_to_zero: malloc(300) then realloc(p, 0), which frees it: nothing remains.
 * - realloc_from_null: realloc(NULL, 700) allocates like malloc.
 * - reallocarray_grow: reallocarray(NULL, 10, 80) then to (20, 80): 1600 remain.
 * - reallocarray_overflow_keeps: malloc(64), then reallocarray overflowing size_t: it fails
 *   and the block stays.
 * - calloc_site: calloc(10, 100); memalign_site: memalign(64, 512); valloc_site: valloc(1000);
 *   pvalloc_site: pvalloc(100) (the requested 100 bytes are what is counted).
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>

#include "scenario.h"

enum { SITES = 10 };

static const char *const site_names[SITES] = {
    "keep_after_failed_realloc", "grow_realloc",  "realloc_to_zero", "realloc_from_null",
    "reallocarray_grow",         "reallocarray_overflow_keeps", "calloc_site",
    "memalign_site",             "valloc_site",   "pvalloc_site",
};
static unsigned long long leaked[SITES];
/* Sizes no allocator can satisfy, hidden from the compiler's allocation-size warnings. */
static volatile size_t too_big = SIZE_MAX / 2;
static volatile size_t overflowing = SIZE_MAX;

static void check(void *p)
{
    if (p == NULL)
        abort();
    SCENARIO_ESCAPE(p);
}

__attribute__((noinline)) static void keep_after_failed_realloc(void)
{
    char *p = malloc(1000);
    check(p);
    if (realloc(p, too_big) != NULL)
        abort();
    leaked[0] += 1000;
}

__attribute__((noinline)) static void grow_realloc(void)
{
    char *p = malloc(100);
    check(p);
    p = realloc(p, 5000);
    check(p);
    leaked[1] += 5000;
}

__attribute__((noinline)) static void realloc_to_zero(void)
{
    char *p = malloc(300);
    check(p);
    /* glibc frees the block and returns NULL. */
    if (realloc(p, 0) != NULL)
        abort();
}

__attribute__((noinline)) static void realloc_from_null(void)
{
    check(realloc(NULL, 700));
    leaked[3] += 700;
}

__attribute__((noinline)) static void reallocarray_grow(void)
{
    char *p = reallocarray(NULL, 10, 80);
    check(p);
    p = reallocarray(p, 20, 80);
    check(p);
    leaked[4] += 1600;
}

__attribute__((noinline)) static void reallocarray_overflow_keeps(void)
{
    char *p = malloc(64);
    check(p);
    if (reallocarray(p, overflowing, 2) != NULL)
        abort();
    leaked[5] += 64;
}

__attribute__((noinline)) static void calloc_site(void)
{
    check(calloc(10, 100));
    leaked[6] += 1000;
}

__attribute__((noinline)) static void memalign_site(void)
{
    check(memalign(64, 512));
    leaked[7] += 512;
}

__attribute__((noinline)) static void valloc_site(void)
{
    check(valloc(1000));
    leaked[8] += 1000;
}

__attribute__((noinline)) static void pvalloc_site(void)
{
    check(pvalloc(100));
    leaked[9] += 100;
}

int main(int argc, char **argv)
{
    struct ticker ticker;

    ticker_start(&ticker, scenario_seconds(argc, argv), 50 * 1000 * 1000);
    while (ticker_wait(&ticker)) {
        keep_after_failed_realloc();
        grow_realloc();
        realloc_to_zero();
        realloc_from_null();
        reallocarray_grow();
        reallocarray_overflow_keeps();
        calloc_site();
        memalign_site();
        valloc_site();
        pvalloc_site();
    }
    scenario_summary("realloc_semantics", NULL, 0);
    printf("{\"sites\":{");
    for (int i = 0; i < SITES; i++)
        printf("%s\"%s\":%llu", i ? "," : "", site_names[i], leaked[i]);
    printf("}}\n");
    return 0;
}

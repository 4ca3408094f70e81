/*
 * Shared helpers of the leakmon test scenarios: the run-time argument, a fixed-rate ticker on
 * the monotonic clock, a deterministic pseudo-random sequence, and the one-line JSON summary
 * each scenario prints when its run is over.
 */
#ifndef LEAKMON_SCENARIO_H
#define LEAKMON_SCENARIO_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* Makes the compiler assume the pointed-to memory is used, so no allocation is optimised away. */
#define SCENARIO_ESCAPE(pointer) __asm__ volatile("" : : "r"(pointer) : "memory")

/* The run time in seconds: argv[1], 6 when absent. */
static inline double scenario_seconds(int argc, char **argv)
{
    if (argc < 2)
        return 6.0;
    char *end = NULL;
    double seconds = strtod(argv[1], &end);
    if (end == argv[1] || *end != '\0' || !(seconds > 0.0)) {
        fprintf(stderr, "usage: %s [SECONDS]\n", argv[0]);
        exit(2);
    }
    return seconds;
}

/* Wakes every `period_ns` on absolute deadlines, so the rate does not drift with the work done. */
struct ticker {
    struct timespec next;
    struct timespec end;
    long period_ns;
};

static inline void timespec_add_ns(struct timespec *t, long long ns)
{
    long long total = (long long)t->tv_nsec + ns;
    t->tv_sec += (time_t)(total / 1000000000LL);
    t->tv_nsec = (long)(total % 1000000000LL);
}

static inline int timespec_before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

static inline void ticker_start(struct ticker *ticker, double seconds, long period_ns)
{
    clock_gettime(CLOCK_MONOTONIC, &ticker->next);
    ticker->end = ticker->next;
    timespec_add_ns(&ticker->end, (long long)(seconds * 1e9));
    ticker->period_ns = period_ns;
}

/* Sleeps until the next tick; returns 0, without sleeping, once that tick is past the run time. */
static inline int ticker_wait(struct ticker *ticker)
{
    timespec_add_ns(&ticker->next, ticker->period_ns);
    if (!timespec_before(&ticker->next, &ticker->end))
        return 0;
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ticker->next, NULL) == EINTR) {
    }
    return 1;
}

/* A 64-bit linear congruential generator (Knuth's MMIX constants); returns its high 32 bits. */
static inline uint32_t lcg_next(uint64_t *state)
{
    *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(*state >> 32);
}

/* Prints the scenario's single summary line; `leak_function` may be NULL (no leak). */
static inline void scenario_summary(const char *scenario, const char *leak_function,
                                    unsigned long long leaked_bytes)
{
    if (leak_function != NULL)
        printf("{\"scenario\":\"%s\",\"leak_function\":\"%s\",\"leaked_bytes\":%llu}\n", scenario,
               leak_function, leaked_bytes);
    else
        printf("{\"scenario\":\"%s\",\"leak_function\":null,\"leaked_bytes\":%llu}\n", scenario,
               leaked_bytes);
    fflush(stdout);
}

#endif

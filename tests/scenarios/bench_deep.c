/*
 * bench_deep: the allocation loop of bench_loop as a distribution-built service runs it: built
 * -O2 without frame pointers (see `cargo xtask bench`), each malloc reached through a chain of
 * five calls, with sizes between 64 and 320 bytes. Times ITERATIONS malloc+free pairs and prints
 * {"iterations":N,"ns_per_pair":X}.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "scenario.h"

/* Each level calls the next and then works on the result, so no call is a tail call and every
 * level keeps a frame; `noinline` keeps them separate functions. */
__attribute__((noinline)) static char *level5(size_t size)
{
    char *block = malloc(size);
    if (block == NULL)
        abort();
    block[0] = (char)size;
    return block;
}

__attribute__((noinline)) static char *level4(size_t size)
{
    char *block = level5(size);
    block[1] = 4;
    return block;
}

__attribute__((noinline)) static char *level3(size_t size)
{
    char *block = level4(size);
    block[2] = 3;
    return block;
}

__attribute__((noinline)) static char *level2(size_t size)
{
    char *block = level3(size);
    block[3] = 2;
    return block;
}

__attribute__((noinline)) static char *level1(size_t size)
{
    char *block = level2(size);
    block[4] = 1;
    return block;
}

int main(int argc, char **argv)
{
    unsigned long long iterations = 1000000;
    struct timespec start, end;
    uint64_t rng = 3;

    if (argc > 1) {
        char *tail = NULL;
        iterations = strtoull(argv[1], &tail, 10);
        if (tail == argv[1] || *tail != '\0' || iterations == 0) {
            fprintf(stderr, "usage: %s [ITERATIONS]\n", argv[0]);
            return 2;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (unsigned long long i = 0; i < iterations; i++) {
        char *block = level1(64 + lcg_next(&rng) % 257);
        SCENARIO_ESCAPE(block);
        free(block);
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    double ns = (double)(end.tv_sec - start.tv_sec) * 1e9 + (double)(end.tv_nsec - start.tv_nsec);
    printf("{\"iterations\":%llu,\"ns_per_pair\":%.2f}\n", iterations, ns / (double)iterations);
    return 0;
}

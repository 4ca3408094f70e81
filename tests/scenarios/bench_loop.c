/*
 * bench_loop: times ITERATIONS pairs of malloc(64) and free, for `cargo xtask bench`, and
 * prints {"iterations":N,"ns_per_pair":X}.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv)
{
    unsigned long long iterations = 1000000;
    struct timespec start, end;

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
        volatile char *block = malloc(64);
        if (block == NULL)
            abort();
        block[0] = (char)i;
        free((void *)block);
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    double ns = (double)(end.tv_sec - start.tv_sec) * 1e9 + (double)(end.tv_nsec - start.tv_nsec);
    printf("{\"iterations\":%llu,\"ns_per_pair\":%.2f}\n", iterations, ns / (double)iterations);
    return 0;
}

/*
 * bench_faults: times ITERATIONS rounds of mapping 16 MiB of anonymous memory, writing one byte
 * to each of its pages (a page fault each) and unmapping it, for `cargo xtask bench`, and prints
 * {"faults":N,"ns_per_fault":X}.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#define REGION (16UL * 1024 * 1024)
#define PAGE 4096UL

int main(int argc, char **argv)
{
    unsigned long long iterations = 20;
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
        volatile char *region = mmap(NULL, REGION, PROT_READ | PROT_WRITE,
                                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (region == MAP_FAILED) {
            perror("mmap");
            return 1;
        }
        for (unsigned long offset = 0; offset < REGION; offset += PAGE)
            region[offset] = (char)i;
        munmap((void *)region, REGION);
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    double ns = (double)(end.tv_sec - start.tv_sec) * 1e9 + (double)(end.tv_nsec - start.tv_nsec);
    unsigned long long faults = iterations * (REGION / PAGE);
    printf("{\"faults\":%llu,\"ns_per_fault\":%.2f}\n", faults, ns / (double)faults);
    return 0;
}

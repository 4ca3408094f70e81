/*
 * many_blocks: far more outstanding allocations and allocating stacks than a small tracer map
 * holds. After DELAY seconds it allocates BLOCKS 64-byte blocks, each from one of 2000 distinct
 * stacks (40 call sites, each reached through a recursion of 50 depths), keeps them all for HOLD
 * seconds, then frees them and prints its summary line (nothing is leaked).
 *
 * usage: many_blocks DELAY BLOCKS HOLD
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "scenario.h"

#define DEPTHS 2000
#define BLOCK_SIZE 64

__attribute__((noinline)) static void *many_blocks_alloc(void)
{
    char *block = malloc(BLOCK_SIZE);
    if (block == NULL)
        abort();
    memset(block, 0x33, BLOCK_SIZE);
    SCENARIO_ESCAPE(block);
    return block;
}

/* 40 call sites of the allocation, each reached at 50 depths: 2000 distinct stacks, all
 * shallower than the tracer's 64-frame limit. */
#define SITES 40
#define SITE_DEPTHS (DEPTHS / SITES)
#define SITE(n)                                                                                  \
    __attribute__((noinline)) static void *site_##n(void)                                        \
    {                                                                                            \
        void *block = many_blocks_alloc();                                                       \
        SCENARIO_ESCAPE(block);                                                                  \
        return block;                                                                            \
    }
SITE(0)
SITE(1)
SITE(2)
SITE(3)
SITE(4)
SITE(5)
SITE(6)
SITE(7)
SITE(8)
SITE(9)
SITE(10)
SITE(11)
SITE(12)
SITE(13)
SITE(14)
SITE(15)
SITE(16)
SITE(17)
SITE(18)
SITE(19)
SITE(20)
SITE(21)
SITE(22)
SITE(23)
SITE(24)
SITE(25)
SITE(26)
SITE(27)
SITE(28)
SITE(29)
SITE(30)
SITE(31)
SITE(32)
SITE(33)
SITE(34)
SITE(35)
SITE(36)
SITE(37)
SITE(38)
SITE(39)

typedef void *(*site_fn)(void);
#define S(n) site_##n
static site_fn const site_table[SITES] = {
    S(0),  S(1),  S(2),  S(3),  S(4),  S(5),  S(6),  S(7),  S(8),  S(9),  S(10), S(11), S(12), S(13),
    S(14), S(15), S(16), S(17), S(18), S(19), S(20), S(21), S(22), S(23), S(24), S(25), S(26), S(27),
    S(28), S(29), S(30), S(31), S(32), S(33), S(34), S(35), S(36), S(37), S(38), S(39),
};

__attribute__((noinline)) static void *descend(unsigned depth, unsigned site)
{
    void *block = depth == 0 ? site_table[site]() : descend(depth - 1, site);
    SCENARIO_ESCAPE(block);
    return block;
}

static void sleep_seconds(double seconds)
{
    struct timespec pause = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&pause, &pause) == -1) {
    }
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s DELAY BLOCKS HOLD\n", argv[0]);
        return 2;
    }
    double delay = strtod(argv[1], NULL);
    long blocks = strtol(argv[2], NULL, 10);
    double hold = strtod(argv[3], NULL);
    void **kept = calloc((size_t)blocks, sizeof *kept);
    if (kept == NULL)
        abort();
    sleep_seconds(delay);
    for (long i = 0; i < blocks; i++)
        kept[i] = descend((unsigned)(i % SITE_DEPTHS), (unsigned)(i / SITE_DEPTHS % SITES));
    sleep_seconds(hold);
    for (long i = 0; i < blocks; i++)
        free(kept[i]);
    free(kept);
    scenario_summary("many_blocks", NULL, 0);
    return 0;
}

/*
 * churn_child: one short-lived worker of churn_spawner. It allocates a few scratch buffers,
 * leaks one small record (so a trace of it has something outstanding when it exits), optionally
 * lingers for argv[1] milliseconds (allocating as it goes), and exits without a summary line.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "scenario.h"

__attribute__((noinline)) static void churn_child_leak(void)
{
    char *record = malloc(256);
    if (record == NULL)
        abort();
    memset(record, 0x5a, 256);
    SCENARIO_ESCAPE(record);
}

__attribute__((noinline)) static void churn_child_scratch(unsigned n)
{
    for (unsigned i = 0; i < 4; i++) {
        char *scratch = malloc(64 + (n + i) * 32 % 1024);
        if (scratch == NULL)
            abort();
        memset(scratch, (int)i, 64);
        SCENARIO_ESCAPE(scratch);
        free(scratch);
    }
}

int main(int argc, char **argv)
{
    long linger_ms = argc > 1 ? strtol(argv[1], NULL, 10) : 0;
    churn_child_scratch(0);
    churn_child_leak();
    for (long waited = 0; waited < linger_ms; waited += 10) {
        struct timespec tick = {0, 10 * 1000 * 1000};
        nanosleep(&tick, NULL);
        churn_child_scratch((unsigned)waited);
        churn_child_leak();
    }
    return 0;
}

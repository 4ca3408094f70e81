/*
 * exec_into: leaks 4 KiB records every 10 ms for SECONDS, then replaces itself with PROGRAM
 * ARGS... (execv), which prints the summary line. What it leaked before the exec is gone with
 * its old image.
 *
 * usage: exec_into SECONDS PROGRAM [ARGS...]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "scenario.h"

__attribute__((noinline)) static void leak_before_exec(unsigned tick)
{
    char *record = malloc(4096);
    if (record == NULL)
        abort();
    memset(record, (int)(tick & 0xff), 4096);
    SCENARIO_ESCAPE(record);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s SECONDS PROGRAM [ARGS...]\n", argv[0]);
        return 2;
    }
    struct ticker ticker;
    unsigned tick = 0;
    ticker_start(&ticker, scenario_seconds(2, argv), 10 * 1000 * 1000);
    while (ticker_wait(&ticker))
        leak_before_exec(tick++);
    fflush(stdout);
    execv(argv[2], argv + 2);
    perror("execv");
    return 127;
}

/*
 * static_prog: a statically linked program, which leakmon cannot trace (there is no shared
 * libc to probe); it allocates and frees a buffer every 10 ms. Not a leak.
 */
#include <stdlib.h>
#include <string.h>

#include "scenario.h"

int main(int argc, char **argv)
{
    struct ticker ticker;

    ticker_start(&ticker, scenario_seconds(argc, argv), 10 * 1000 * 1000);
    while (ticker_wait(&ticker)) {
        char *buf = malloc(1024);
        if (buf == NULL)
            abort();
        memset(buf, 1, 1024);
        SCENARIO_ESCAPE(buf);
        free(buf);
    }
    scenario_summary("static_prog", NULL, 0);
    return 0;
}

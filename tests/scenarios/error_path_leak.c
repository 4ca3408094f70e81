/*
 * error_path_leak: a request handler that frees the request buffer on success but returns
 * early on a validation error without freeing it; about one request in eight fails.
 */
#include <stdlib.h>
#include <string.h>

#include "scenario.h"

#define REQUEST_SIZE 512

__attribute__((noinline)) static char *read_request(unsigned id)
{
    char *buf = malloc(REQUEST_SIZE);
    if (buf == NULL)
        abort();
    memset(buf, 0, REQUEST_SIZE);
    snprintf(buf, REQUEST_SIZE, "GET /items/%u HTTP/1.1", id);
    return buf;
}

/* Returns 0 when the request was handled, -1 when it was rejected (and its buffer leaked). */
__attribute__((noinline)) static int handle_request(unsigned id, uint64_t *rng,
                                                    unsigned long *checksum)
{
    char *buf = read_request(id);
    if (lcg_next(rng) % 8 == 0)
        return -1;
    *checksum += (unsigned char)buf[id % 16];
    free(buf);
    return 0;
}

int main(int argc, char **argv)
{
    struct ticker ticker;
    uint64_t rng = 42;
    unsigned long checksum = 0;
    unsigned long long errors = 0;
    unsigned id = 0;

    ticker_start(&ticker, scenario_seconds(argc, argv), 1000 * 1000);
    while (ticker_wait(&ticker)) {
        if (handle_request(id++, &rng, &checksum) != 0)
            errors++;
    }
    SCENARIO_ESCAPE(&checksum);
    scenario_summary("error_path_leak", "read_request", errors * REQUEST_SIZE);
    return 0;
}

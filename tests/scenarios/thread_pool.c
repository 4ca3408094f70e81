/*
 * thread_pool: every 100 ms, starts four short-lived workers that each handle a request (a few
 * milliseconds of work with a small allocation) and joins them, so it has 1 to 5 threads at any
 * time. Not a thread leak.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "scenario.h"

#define WORKERS 4

static void *handle_request(void *arg)
{
    unsigned long n = (unsigned long)arg;
    char *buffer = malloc(1024);
    struct timespec pause = {.tv_sec = 0, .tv_nsec = 5 * 1000 * 1000};

    if (buffer == NULL)
        abort();
    memset(buffer, (int)(n & 0xff), 1024);
    nanosleep(&pause, NULL);
    SCENARIO_ESCAPE(buffer);
    free(buffer);
    return NULL;
}

int main(int argc, char **argv)
{
    struct ticker ticker;
    unsigned long n = 0;

    ticker_start(&ticker, scenario_seconds(argc, argv), 100 * 1000 * 1000);
    while (ticker_wait(&ticker)) {
        pthread_t workers[WORKERS];
        for (int i = 0; i < WORKERS; i++) {
            if (pthread_create(&workers[i], NULL, handle_request, (void *)n++) != 0)
                abort();
        }
        for (int i = 0; i < WORKERS; i++)
            pthread_join(workers[i], NULL);
    }
    scenario_summary("thread_pool", NULL, 0);
    return 0;
}

/*
 * stuck_workers: a worker thread is started every 250 ms to handle a request and, on a path
 * that forgets to signal it, waits forever instead of finishing: it is never joined, and threads
 * pile up at 4 a second. A thread leak.
 */
#include <pthread.h>
#include <unistd.h>

#include "scenario.h"

static void *stuck_worker(void *arg)
{
    (void)arg;
    for (;;)
        pause();
    return NULL;
}

__attribute__((noinline)) static int spawn_worker(void)
{
    pthread_t thread;
    return pthread_create(&thread, NULL, stuck_worker, NULL);
}

int main(int argc, char **argv)
{
    struct ticker ticker;
    unsigned long long started = 0;

    ticker_start(&ticker, scenario_seconds(argc, argv), 250 * 1000 * 1000);
    while (ticker_wait(&ticker)) {
        if (spawn_worker() == 0)
            started++;
    }
    SCENARIO_ESCAPE(&started);
    scenario_summary("stuck_workers", NULL, 0);
    return 0;
}

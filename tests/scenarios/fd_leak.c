/*
 * fd_leak: a client that opens /dev/null every 50 ms and never closes it: open file descriptors
 * grow by 20 per second. It raises its soft open-files limit to the hard limit first, as
 * services do, so a long run does not hit the limit. It leaks no memory, so its summary names
 * the leaking function with 0 bytes. For the daemon's descriptor-growth detection.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/resource.h>

#include "scenario.h"

__attribute__((noinline)) static int open_handle(void)
{
    int fd = open("/dev/null", O_RDONLY);
    if (fd < 0) {
        perror("open /dev/null");
        exit(1);
    }
    return fd;
}

int main(int argc, char **argv)
{
    struct ticker ticker;
    struct rlimit limit;

    double seconds = scenario_seconds(argc, argv);
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &limit) != 0)
            perror("setrlimit RLIMIT_NOFILE");
    }
    ticker_start(&ticker, seconds, 50 * 1000 * 1000);
    while (ticker_wait(&ticker))
        open_handle();
    scenario_summary("fd_leak", "open_handle", 0);
    return 0;
}

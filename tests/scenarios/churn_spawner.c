/*
 * churn_spawner: process churn. Runs COUNT children of the program CHILD (fork, execv, exit),
 * at most PARALLEL at a time; every LINGER_EVERY-th child is asked to linger LINGER_MS
 * milliseconds (long enough to be watched, and traced, before it exits), the others exit at
 * once. Prints the one summary line (no leak: the children's leaks die with them).
 *
 * usage: churn_spawner CHILD COUNT PARALLEL LINGER_EVERY LINGER_MS
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "scenario.h"

static void reap_one(void)
{
    int status;
    pid_t pid = wait(&status);
    if (pid < 0) {
        perror("wait");
        exit(1);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "churn_spawner: child %d failed (status %#x)\n", (int)pid, status);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s CHILD COUNT PARALLEL LINGER_EVERY LINGER_MS\n", argv[0]);
        return 2;
    }
    const char *child = argv[1];
    long count = strtol(argv[2], NULL, 10);
    long parallel = strtol(argv[3], NULL, 10);
    long linger_every = strtol(argv[4], NULL, 10);
    const char *linger_ms = argv[5];
    long running = 0;

    for (long i = 0; i < count; i++) {
        if (running >= parallel) {
            reap_one();
            running--;
        }
        int linger = linger_every > 0 && i % linger_every == linger_every - 1;
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) {
            char *args[] = {(char *)child, linger ? (char *)linger_ms : "0", NULL};
            execv(child, args);
            perror("execv");
            _exit(127);
        }
        running++;
    }
    while (running > 0) {
        reap_one();
        running--;
    }
    scenario_summary("churn_spawner", NULL, 0);
    return 0;
}

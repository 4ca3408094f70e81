/*
 * static_prog: a statically linked program without libc (no malloc/free anywhere), which
 * leakmon cannot trace: it must refuse with a one-line error. It sleeps for argv[1] seconds
 * (default 1) using raw system calls, then exits.
 */
#include <stddef.h>

static long raw_syscall2(long nr, long a, long b)
{
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b) : "rcx", "r11", "memory");
    return ret;
}

struct kernel_timespec {
    long tv_sec;
    long tv_nsec;
};

static long parse_seconds(const char *text)
{
    long value = 0;
    if (text == NULL)
        return 1;
    for (; *text >= '0' && *text <= '9'; text++)
        value = value * 10 + (*text - '0');
    return value > 0 ? value : 1;
}

__attribute__((used)) void static_main(long *stack)
{
    long argc = stack[0];
    char **argv = (char **)(stack + 1);
    struct kernel_timespec delay = { parse_seconds(argc > 1 ? argv[1] : NULL), 0 };

    raw_syscall2(35 /* nanosleep */, (long)&delay, 0);
    raw_syscall2(60 /* exit */, 0, 0);
}

__asm__(".globl _start\n"
        "_start:\n"
        "    mov %rsp, %rdi\n"
        "    and $-16, %rsp\n"
        "    call static_main\n"
        "    hlt\n");

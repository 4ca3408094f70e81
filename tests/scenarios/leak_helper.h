/* The shared-library helper of wrapper_leak (libleak_helper.so). */
#ifndef LEAKMON_LEAK_HELPER_H
#define LEAKMON_LEAK_HELPER_H

#include <stddef.h>

/* A copy of `size` bytes of `data`, from `helper_alloc`, which aborts when memory runs out. */
void *helper_dup(const void *data, size_t size);

#endif

/* libleak_helper.so: a copy helper, as the utility libraries servers link provide. */
#include <stdlib.h>
#include <string.h>

#include "leak_helper.h"

__attribute__((noinline)) static void *helper_alloc(size_t size)
{
    void *block = malloc(size);
    if (block == NULL)
        abort();
    return block;
}

void *helper_dup(const void *data, size_t size)
{
    void *copy = helper_alloc(size);
    memcpy(copy, data, size);
    return copy;
}

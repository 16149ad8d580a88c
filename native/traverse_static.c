#include "traverse_static.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#define CHUNK 4096

/* What a traversal needs between chunks: the '{' offsets of the open
 * blocks, innermost last. */
typedef struct {
    int *open;
    int depth;
} Stack;

/* Feeds one chunk; offset is the file offset of buf[0]. */
static int scan(Stack *stack, const char *buf, size_t len, long long offset,
                StaticCallbacks cbs)
{
    size_t i;
    for (i = 0; i < len; i++) {
        /* Per byte, not per file size: the size of a pipe or special file
         * is not known in advance. A byte at offset INT_MAX means the file
         * is longer than INT_MAX bytes. */
        long long at = offset + (long long)i;
        if (at >= INT_MAX) {
            return TRAVERSE_STATIC_ERR_TOO_LARGE;
        }
        if (buf[i] == '{') {
            if (stack->depth == TRAVERSE_STATIC_MAX_DEPTH) {
                return TRAVERSE_STATIC_ERR_TOO_DEEP;
            }
            stack->open[stack->depth] = (int)at;
            if (cbs.start != NULL) {
                cbs.start(stack->depth);
            }
            stack->depth++;
        } else if (buf[i] == '}') {
            if (stack->depth == 0) {
                return TRAVERSE_STATIC_ERR_UNBALANCED;
            }
            stack->depth--;
            if (cbs.end != NULL) {
                cbs.end(stack->open[stack->depth], (int)at);
            }
        }
    }
    return TRAVERSE_STATIC_OK;
}

int traverse_file_static(const char *filename, StaticCallbacks cbs)
{
    FILE *file;
    char *buf;
    Stack stack;
    long long offset = 0;
    int rc = TRAVERSE_STATIC_OK;

    if (filename == NULL) {
        return TRAVERSE_STATIC_ERR_ARG;
    }
    file = fopen(filename, "rb");
    if (file == NULL) {
        return TRAVERSE_STATIC_ERR_IO;
    }
    buf = malloc(CHUNK);
    stack.open = malloc(sizeof(int) * TRAVERSE_STATIC_MAX_DEPTH);
    stack.depth = 0;
    if (buf == NULL || stack.open == NULL) {
        rc = TRAVERSE_STATIC_ERR_NOMEM;
    }
    while (rc == TRAVERSE_STATIC_OK) {
        size_t got = fread(buf, 1, CHUNK, file);
        if (got == 0) {
            if (ferror(file)) {
                rc = TRAVERSE_STATIC_ERR_IO;
            } else if (stack.depth != 0) {
                rc = TRAVERSE_STATIC_ERR_UNBALANCED;
            }
            break;
        }
        rc = scan(&stack, buf, got, offset, cbs);
        /* Cannot overflow: scan refused any offset from INT_MAX on, and a
         * chunk is far smaller than LLONG_MAX - INT_MAX. */
        offset += (long long)got;
    }
    free(stack.open);
    free(buf);
    /* A read-only stream: a failing fclose loses nothing we reported. */
    (void)fclose(file);
    return rc;
}

size_t traverse_static_callbacks_size(void)
{
    return sizeof(StaticCallbacks);
}

size_t traverse_static_callbacks_end_offset(void)
{
    return offsetof(StaticCallbacks, end);
}

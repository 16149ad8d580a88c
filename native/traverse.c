/* The seed's traverse(), the file scanner, and the small helpers. */
#include "traverse.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "traverse_scan.h"

/* Big enough to read a file in few calls, small enough for any heap. */
#define READ_CHUNK 65536

void traverse(char* filename, Callbacks cbs, void* user_data) {
    (void)filename; /* the seed never read it */
    if (cbs.start != NULL) {
        cbs.start(user_data, 100);
    }
    if (cbs.end != NULL) {
        cbs.end(user_data, 2, 3);
    }
}

static void emit_start(const TraverseSinks* sinks, int depth) {
    size_t i;
    for (i = 0; i < sinks->count; i++) {
        if (sinks->cbs[i].start != NULL) {
            sinks->cbs[i].start(sinks->user_data[i], depth);
        }
    }
}

static void emit_end(const TraverseSinks* sinks, int open, int close) {
    size_t i;
    for (i = 0; i < sinks->count; i++) {
        if (sinks->cbs[i].end != NULL) {
            sinks->cbs[i].end(sinks->user_data[i], open, close);
        }
    }
}

/* Fails fast on huge regular files instead of reading 2 GiB first. */
static int check_size(FILE* file) {
    struct stat info;
    int fd = fileno(file);
    if (fd < 0 || fstat(fd, &info) != 0) {
        return TRAVERSE_ERR_READ;
    }
    if (S_ISDIR(info.st_mode)) {
        return TRAVERSE_ERR_READ;
    }
    if (S_ISREG(info.st_mode) && info.st_size > INT_MAX) {
        return TRAVERSE_ERR_TOO_LARGE;
    }
    return TRAVERSE_OK;
}

/*
 * Nesting is tracked in a fixed array, so depth is bounded by
 * TRAVERSE_MAX_DEPTH and no input can exhaust the stack. Offsets are
 * counted too, so a stream that grows past INT_MAX (a pipe, a file
 * appended to while read) is caught where fstat could not see it.
 */
static int scan_stream(FILE* file, unsigned char* buffer,
                       const TraverseSinks* sinks) {
    int open_at[TRAVERSE_MAX_DEPTH];
    int depth = 0;
    int offset = 0; /* of the next byte */
    for (;;) {
        size_t got = fread(buffer, 1, READ_CHUNK, file);
        size_t i;
        for (i = 0; i < got; i++) {
            if (offset == INT_MAX) {
                return TRAVERSE_ERR_TOO_LARGE;
            }
            switch (buffer[i]) {
            case '\0':
                return TRAVERSE_ERR_NOT_TEXT;
            case '{':
                if (depth == TRAVERSE_MAX_DEPTH) {
                    return TRAVERSE_ERR_TOO_DEEP;
                }
                open_at[depth] = offset;
                depth++;
                emit_start(sinks, depth);
                break;
            case '}':
                if (depth == 0) {
                    return TRAVERSE_ERR_UNMATCHED_CLOSE;
                }
                depth--;
                emit_end(sinks, open_at[depth], offset);
                break;
            default:
                break;
            }
            offset++;
        }
        if (got < READ_CHUNK) {
            if (ferror(file)) {
                return TRAVERSE_ERR_READ;
            }
            break;
        }
    }
    return depth == 0 ? TRAVERSE_OK : TRAVERSE_ERR_UNCLOSED;
}

int traverse_scan_file(const char* filename, const TraverseSinks* sinks) {
    FILE* file;
    int result;
    if (filename == NULL || sinks == NULL) {
        return TRAVERSE_ERR_ARG;
    }
    file = fopen(filename, "rb");
    if (file == NULL) {
        return TRAVERSE_ERR_OPEN;
    }
    result = check_size(file);
    if (result == TRAVERSE_OK) {
        unsigned char* buffer = malloc(READ_CHUNK);
        if (buffer == NULL) {
            result = TRAVERSE_ERR_NOMEM;
        } else {
            result = scan_stream(file, buffer, sinks);
            free(buffer);
        }
    }
    /* Nothing was written, so a failing fclose loses no data. */
    (void)fclose(file);
    return result;
}

int traverse_file(const char* filename, Callbacks cbs, void* user_data) {
    TraverseSinks sinks;
    sinks.cbs = &cbs;
    sinks.user_data = &user_data;
    sinks.count = 1;
    return traverse_scan_file(filename, &sinks);
}

const char* traverse_strerror(int code) {
    switch (code) {
    case TRAVERSE_OK:
        return "success";
    case TRAVERSE_ERR_ARG:
        return "invalid argument";
    case TRAVERSE_ERR_OPEN:
        return "cannot open file";
    case TRAVERSE_ERR_READ:
        return "cannot read file";
    case TRAVERSE_ERR_TOO_LARGE:
        return "file larger than INT_MAX bytes";
    case TRAVERSE_ERR_NOT_TEXT:
        return "file contains a NUL byte";
    case TRAVERSE_ERR_UNMATCHED_CLOSE:
        return "'}' without a matching '{'";
    case TRAVERSE_ERR_UNCLOSED:
        return "file ends inside an open block";
    case TRAVERSE_ERR_TOO_DEEP:
        return "blocks nested deeper than TRAVERSE_MAX_DEPTH";
    case TRAVERSE_ERR_NOMEM:
        return "out of memory";
    case TRAVERSE_ERR_THREAD:
        return "thread or mutex operation failed";
    case TRAVERSE_ERR_TOO_MANY_FILES:
        return "more than TRAVERSE_MAX_FILES files";
    case TRAVERSE_ERR_FULL:
        return "no subscription slot left";
    case TRAVERSE_ERR_NO_SUBSCRIPTION:
        return "no such subscription";
    default:
        return "unknown error code";
    }
}

void traverse_bench_start(Callbacks cbs, void* user_data, int64_t n) {
    int64_t i;
    if (cbs.start == NULL) {
        return;
    }
    for (i = 0; i < n; i++) {
        cbs.start(user_data, (int)(i & INT_MAX));
    }
}

size_t traverse_abi_sizeof_callbacks(void) {
    return sizeof(Callbacks);
}

size_t traverse_abi_alignof_callbacks(void) {
    struct probe {
        char before;
        Callbacks callbacks;
    };
    return offsetof(struct probe, callbacks);
}

size_t traverse_abi_offsetof_end(void) {
    return offsetof(Callbacks, end);
}

/*
 * traverse_static: the brace traversal of traverse.h, for callbacks that
 * take no user_data.
 *
 * It stands in for the C APIs (qsort, nftw, atexit, signal-style and legacy
 * libraries) whose callbacks receive only the event's own arguments, so
 * that the Rust side has nowhere to pass its state but a distinct function
 * pointer per caller: see handle_registry::static_trampoline.
 *
 * The file is read as plain bytes; every '{' opens a block and every '}'
 * closes the innermost open one. Nothing else is interpreted.
 */
#ifndef HANDLE_REGISTRY_TRAVERSE_STATIC_H
#define HANDLE_REGISTRY_TRAVERSE_STATIC_H

#include <stddef.h>

/* A block opens; depth counts the blocks already open around it (0 at the
 * top level). */
typedef void (*StaticStartFn)(int depth);

/* A block closes; both are byte offsets in the file, of its '{' and '}'. */
typedef void (*StaticEndFn)(int open_offset, int close_offset);

/* Either callback may be NULL: its events are skipped. */
typedef struct {
    StaticStartFn start;
    StaticEndFn end;
} StaticCallbacks;

#define TRAVERSE_STATIC_OK 0
/* filename is NULL. */
#define TRAVERSE_STATIC_ERR_ARG (-1)
/* The file cannot be opened or read. */
#define TRAVERSE_STATIC_ERR_IO (-2)
/* A '}' with no open block, or blocks still open at the end. */
#define TRAVERSE_STATIC_ERR_UNBALANCED (-3)
/* More than TRAVERSE_STATIC_MAX_DEPTH blocks open at once. */
#define TRAVERSE_STATIC_ERR_TOO_DEEP (-4)
/* The file is longer than INT_MAX bytes (offsets are reported as int). */
#define TRAVERSE_STATIC_ERR_TOO_LARGE (-5)
/* An allocation failed. */
#define TRAVERSE_STATIC_ERR_NOMEM (-6)

#define TRAVERSE_STATIC_MAX_DEPTH 1024

/*
 * Reads filename and reports every block, in file order: start when its
 * '{' is read, end when its '}' is. Returns TRAVERSE_STATIC_OK or one of the
 * negative codes above. Events stop at the first error, so a file that
 * turns out to be unbalanced may already have reported its earlier blocks.
 *
 * Reentrant and thread-safe: all state is local to the call.
 */
int traverse_file_static(const char *filename, StaticCallbacks cbs);

/* sizeof(StaticCallbacks) and offsetof(StaticCallbacks, end), for the Rust
 * bindings' layout tests. */
size_t traverse_static_callbacks_size(void);
size_t traverse_static_callbacks_end_offset(void);

#endif

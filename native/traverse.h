/*
 * traverse: a small C library that reports events through callbacks plus
 * `user_data`, the way countless C libraries do. It is the end-to-end test
 * bed of handle-registry: Rust passes a registry handle as `user_data`.
 *
 * Events, for every function below that reads a file: each balanced
 * `{ ... }` block of the file produces
 *   - start(user_data, depth)       when its `{` is read; depth 1 is the
 *                                   outermost block;
 *   - end(user_data, open, close)   when its `}` is read; open and close are
 *                                   the byte offsets of the `{` and the `}`.
 * Every `{` and `}` byte counts (there are no strings or comments). Events
 * are reported while reading: when a file turns out to be malformed, the
 * events before the fault have already been delivered. A NULL callback is
 * never called; the event is skipped.
 *
 * Error codes: functions return TRAVERSE_OK (0) or one of the negative
 * TRAVERSE_ERR_* codes below; traverse_strerror() describes each one.
 * No input, however malformed, makes these functions crash or read out of
 * bounds; limits are enforced with error codes, never with recursion.
 */
#ifndef HANDLE_REGISTRY_TRAVERSE_H
#define HANDLE_REGISTRY_TRAVERSE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- The seed's API, unchanged ---------------------------------------- */

typedef void (*StartCallbackFn)(void* user_data, int i);
typedef void (*EndCallbackFn)(void* user_data, int a, int b);
typedef struct { StartCallbackFn start; EndCallbackFn end; } Callbacks;

/*
 * The seed's behaviour: calls start(user_data, 100), then
 * end(user_data, 2, 3), on the calling thread, skipping a NULL callback.
 * `filename` is neither read nor written; it may be NULL.
 */
void traverse(char* filename, Callbacks cbs, void* user_data);

/* ---- Error codes -------------------------------------------------------- */

#define TRAVERSE_OK 0
/* An argument is invalid: a NULL filename or array, a negative count. */
#define TRAVERSE_ERR_ARG (-1)
/* The file does not exist or cannot be opened. */
#define TRAVERSE_ERR_OPEN (-2)
/* Reading failed (for example the path names a directory). */
#define TRAVERSE_ERR_READ (-3)
/* The file is larger than INT_MAX bytes: offsets would not fit an int. */
#define TRAVERSE_ERR_TOO_LARGE (-4)
/* The file contains a NUL byte: binary data, not text. */
#define TRAVERSE_ERR_NOT_TEXT (-5)
/* Malformed: a `}` closes no open block. */
#define TRAVERSE_ERR_UNMATCHED_CLOSE (-6)
/* Malformed: the file ends inside an open block. */
#define TRAVERSE_ERR_UNCLOSED (-7)
/* Blocks are nested deeper than TRAVERSE_MAX_DEPTH. */
#define TRAVERSE_ERR_TOO_DEEP (-8)
/* Out of memory. */
#define TRAVERSE_ERR_NOMEM (-9)
/* A thread could not be created (or joined, or a mutex locked). */
#define TRAVERSE_ERR_THREAD (-10)
/* traverse_files_parallel: more than TRAVERSE_MAX_FILES files. */
#define TRAVERSE_ERR_TOO_MANY_FILES (-11)
/* traverse_subscribe: every subscription slot (or every id) is taken. */
#define TRAVERSE_ERR_FULL (-12)
/* traverse_unsubscribe: no live subscription has this id. */
#define TRAVERSE_ERR_NO_SUBSCRIPTION (-13)

/* Deepest nesting reported; one level deeper is TRAVERSE_ERR_TOO_DEEP. */
#define TRAVERSE_MAX_DEPTH 1024
/* Most files one traverse_files_parallel call accepts (one thread each). */
#define TRAVERSE_MAX_FILES 64
/* Most subscriptions live at once. */
#define TRAVERSE_MAX_SUBSCRIPTIONS 16

/*
 * A static, human-readable description of `code`; "unknown error code" for
 * a value that is not one of the codes above. Never NULL. Thread-safe.
 */
const char* traverse_strerror(int code);

/* ---- Real work ---------------------------------------------------------- */

/*
 * Reads `filename` and reports its blocks (see the top of this file) on the
 * calling thread, then returns.
 *
 * Returns TRAVERSE_OK, or TRAVERSE_ERR_ARG (NULL filename), _OPEN, _READ,
 * _TOO_LARGE, _NOT_TEXT, _UNMATCHED_CLOSE, _UNCLOSED, _TOO_DEEP, _NOMEM.
 */
int traverse_file(const char* filename, Callbacks cbs, void* user_data);

/* ---- Cross-thread ------------------------------------------------------- */

/*
 * Traverses `count` files at once, each on its own new pthread, and joins
 * every thread before returning. The callbacks run on those threads,
 * concurrently, all with the same `user_data`; never on the calling thread.
 * Events of one file arrive in order; events of different files interleave.
 *
 * If `results` is not NULL it must hold `count` ints: results[i] receives
 * what traverse_file() returned for filenames[i], or TRAVERSE_ERR_THREAD
 * when no thread could be started for it.
 *
 * Returns TRAVERSE_OK once every file was traversed (whatever each file's
 * own result), TRAVERSE_ERR_THREAD when some thread could not be started
 * (the files that got one were still traversed), TRAVERSE_ERR_ARG (count
 * negative, or filenames NULL with count > 0), TRAVERSE_ERR_TOO_MANY_FILES
 * (count > TRAVERSE_MAX_FILES) or TRAVERSE_ERR_NOMEM; in the last three
 * cases no callback was called and `results` is untouched.
 */
int traverse_files_parallel(const char* const* filenames, int count,
                            Callbacks cbs, void* user_data, int* results);

/* ---- Later: callbacks kept after the registering call returns ----------- */

/*
 * Keeps `cbs` and `user_data` until traverse_unsubscribe(); they are called
 * by traverse_publish() and traverse_publish_on_thread(), long after this
 * call has returned, on whatever thread publishes. Thread-safe.
 *
 * Returns the subscription's id (> 0; ids are never reused) or
 * TRAVERSE_ERR_FULL (TRAVERSE_MAX_SUBSCRIPTIONS are live, or ids ran out)
 * or TRAVERSE_ERR_THREAD (the table's mutex could not be locked).
 */
int traverse_subscribe(Callbacks cbs, void* user_data);

/*
 * Forgets subscription `id`: publications that start after this returns
 * do not call it. A publication already running on another thread may
 * still call it, once per remaining event, after this returns: it works
 * on a copy of the table taken when it started. (That is the late call
 * which makes a freed `user_data` pointer dangerous, and a handle safe.)
 * Safe to call from inside a callback.
 *
 * Returns TRAVERSE_OK, TRAVERSE_ERR_NO_SUBSCRIPTION for an id that is not
 * live, or TRAVERSE_ERR_THREAD (mutex failure).
 */
int traverse_unsubscribe(int id);

/*
 * Traverses `filename` on the calling thread, reporting each event to every
 * subscription live when the call started, in subscription order.
 * Returns what traverse_file() would, or TRAVERSE_ERR_THREAD (mutex).
 */
int traverse_publish(const char* filename);

/*
 * traverse_publish() on a new pthread, joined before returning: the
 * callbacks run on that C thread. Returns its result, TRAVERSE_ERR_NOMEM,
 * or TRAVERSE_ERR_THREAD when the thread could not be started or joined.
 */
int traverse_publish_on_thread(const char* filename);

/* ---- Benchmark helper --------------------------------------------------- */

/*
 * Calls start(user_data, i) for i = 0 .. n-1 (i wrapped to int) in a tight
 * loop on the calling thread, to measure the cost of one callback. Does
 * nothing when start is NULL or n <= 0.
 */
void traverse_bench_start(Callbacks cbs, void* user_data, int64_t n);

/* ---- ABI probes, for bindings' layout tests ------------------------------ */

/* sizeof(Callbacks), its alignment, and offsetof(Callbacks, end). */
size_t traverse_abi_sizeof_callbacks(void);
size_t traverse_abi_alignof_callbacks(void);
size_t traverse_abi_offsetof_end(void);

#ifdef __cplusplus
}
#endif

#endif /* HANDLE_REGISTRY_TRAVERSE_H */

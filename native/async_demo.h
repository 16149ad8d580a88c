/*
 * async_demo: the shape of an asynchronous C API, for handle-registry's
 * `completion` module (feature `async`). Each call starts a detached
 * pthread and returns at once; the thread later calls back with the
 * `user_data` it was given, then calls `destroy(user_data)` exactly once
 * (the destroy-notify), and exits. Nothing is called back when the
 * starting call fails.
 */
#ifndef HANDLE_REGISTRY_ASYNC_DEMO_H
#define HANDLE_REGISTRY_ASYNC_DEMO_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef void (*AsyncDemoDoneFn)(void* user_data, int result);
typedef void (*AsyncDemoItemFn)(void* user_data, int64_t item);
typedef void (*AsyncDemoDestroyFn)(void* user_data);

/*
 * Counts the blocks of `filename` (see traverse.h) on a new thread: calls
 * done(user_data, count), or done(user_data, TRAVERSE_ERR_*) when
 * traverse_file() fails, once, then destroy(user_data). `filename` is
 * copied. A NULL `done` or `destroy` is skipped.
 * Returns TRAVERSE_OK, TRAVERSE_ERR_ARG (NULL filename),
 * TRAVERSE_ERR_NOMEM or TRAVERSE_ERR_THREAD.
 */
int async_demo_count_blocks(const char* filename, AsyncDemoDoneFn done,
                            AsyncDemoDestroyFn destroy, void* user_data);

/*
 * A request the library gives up on: on a new thread, calls only
 * destroy(user_data), never a completion.
 * Returns TRAVERSE_OK, TRAVERSE_ERR_NOMEM or TRAVERSE_ERR_THREAD.
 */
int async_demo_abandon(AsyncDemoDestroyFn destroy, void* user_data);

/*
 * On a new thread: calls item(user_data, i) for i = 0 .. n-1, in order,
 * then destroy(user_data). When `item` returns nonzero for an i, it is
 * called again with the same i after sched_yield() (back-pressure by
 * retrying); a return of 0 moves on.
 * Returns TRAVERSE_OK, TRAVERSE_ERR_ARG (n < 0), TRAVERSE_ERR_NOMEM or
 * TRAVERSE_ERR_THREAD.
 */
typedef int (*AsyncDemoRetryItemFn)(void* user_data, int64_t item);
int async_demo_emit(int64_t n, AsyncDemoRetryItemFn item,
                    AsyncDemoDestroyFn destroy, void* user_data);

#ifdef __cplusplus
}
#endif

#endif /* HANDLE_REGISTRY_ASYNC_DEMO_H */

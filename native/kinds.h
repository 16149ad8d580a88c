/* kinds: a tiny function table in the shape of sqlite3_create_function_v2.
 *
 * One user_data may be registered under several names, each registration
 * with its own destroy-notify: C calls destroy(user_data) once per
 * registration, when the name is replaced, dropped, or the table closed.
 * All calls come on the calling thread. Not thread-safe: one table, one
 * thread at a time. */
#ifndef HANDLE_REGISTRY_KINDS_H
#define HANDLE_REGISTRY_KINDS_H

#define KINDS_OK 0
#define KINDS_ERR_ARG -1
#define KINDS_ERR_FULL -2
#define KINDS_ERR_NO_FUNCTION -3
#define KINDS_MAX_FUNCTIONS 16
#define KINDS_MAX_NAME 31

typedef int (*KindsCallFn)(void* user_data, int arg);
typedef void (*KindsDestroyFn)(void* user_data);

typedef struct KindsTable KindsTable;

/* A new, empty table, or NULL when out of memory. */
KindsTable* kinds_open(void);

/* Registers `fn` under `name` with `user_data` and `destroy` (nullable).
 * An existing function of that name is replaced: its destroy is called
 * first. On an error, destroy is not called and the table is unchanged:
 * the caller still owns user_data. */
int kinds_create_function(KindsTable* table, const char* name, KindsCallFn fn,
                          void* user_data, KindsDestroyFn destroy);

/* Calls the function registered as `name` with `arg`, storing its result
 * in *out. KINDS_ERR_NO_FUNCTION if there is none. */
int kinds_call(KindsTable* table, const char* name, int arg, int* out);

/* Removes `name`, calling its destroy. KINDS_ERR_NO_FUNCTION if none. */
int kinds_drop_function(KindsTable* table, const char* name);

/* How many functions are registered. */
int kinds_count(const KindsTable* table);

/* Destroys every remaining registration in registration order, then frees
 * the table. NULL is ignored. */
void kinds_close(KindsTable* table);

#endif

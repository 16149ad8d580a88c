/*
 * Subscriptions: callbacks kept after the registering call returned and
 * called on later calls, possibly from a C thread.
 */
#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>

#include "traverse.h"
#include "traverse_scan.h"

typedef struct {
    int id; /* 0: free slot */
    Callbacks cbs;
    void* user_data;
} Subscription;

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static Subscription table[TRAVERSE_MAX_SUBSCRIPTIONS];
static int last_id = 0;

int traverse_subscribe(Callbacks cbs, void* user_data) {
    int id = TRAVERSE_ERR_FULL;
    size_t i;
    if (pthread_mutex_lock(&table_lock) != 0) {
        return TRAVERSE_ERR_THREAD;
    }
    for (i = 0; i < TRAVERSE_MAX_SUBSCRIPTIONS && last_id < INT_MAX; i++) {
        if (table[i].id == 0) {
            last_id++;
            table[i].id = last_id;
            table[i].cbs = cbs;
            table[i].user_data = user_data;
            id = last_id;
            break;
        }
    }
    if (pthread_mutex_unlock(&table_lock) != 0) {
        return TRAVERSE_ERR_THREAD;
    }
    return id;
}

int traverse_unsubscribe(int id) {
    int result = TRAVERSE_ERR_NO_SUBSCRIPTION;
    size_t i;
    if (id <= 0) {
        return TRAVERSE_ERR_NO_SUBSCRIPTION;
    }
    if (pthread_mutex_lock(&table_lock) != 0) {
        return TRAVERSE_ERR_THREAD;
    }
    for (i = 0; i < TRAVERSE_MAX_SUBSCRIPTIONS; i++) {
        if (table[i].id == id) {
            table[i].id = 0;
            table[i].cbs.start = NULL;
            table[i].cbs.end = NULL;
            table[i].user_data = NULL;
            result = TRAVERSE_OK;
            break;
        }
    }
    if (pthread_mutex_unlock(&table_lock) != 0) {
        return TRAVERSE_ERR_THREAD;
    }
    return result;
}

/*
 * Delivers to a copy of the table so that callbacks run without the lock:
 * they may subscribe and unsubscribe, and a slow callback blocks no one.
 */
int traverse_publish(const char* filename) {
    Callbacks cbs[TRAVERSE_MAX_SUBSCRIPTIONS];
    void* user_data[TRAVERSE_MAX_SUBSCRIPTIONS];
    TraverseSinks sinks;
    size_t count = 0;
    size_t i;
    if (filename == NULL) {
        return TRAVERSE_ERR_ARG;
    }
    if (pthread_mutex_lock(&table_lock) != 0) {
        return TRAVERSE_ERR_THREAD;
    }
    for (i = 0; i < TRAVERSE_MAX_SUBSCRIPTIONS; i++) {
        if (table[i].id != 0) {
            cbs[count] = table[i].cbs;
            user_data[count] = table[i].user_data;
            count++;
        }
    }
    if (pthread_mutex_unlock(&table_lock) != 0) {
        return TRAVERSE_ERR_THREAD;
    }
    sinks.cbs = cbs;
    sinks.user_data = user_data;
    sinks.count = count;
    return traverse_scan_file(filename, &sinks);
}

typedef struct {
    const char* filename;
    int result;
} PublishJob;

static void* run_publish(void* arg) {
    PublishJob* job = arg;
    job->result = traverse_publish(job->filename);
    return NULL;
}

int traverse_publish_on_thread(const char* filename) {
    PublishJob* job;
    pthread_t thread;
    int result;
    job = malloc(sizeof *job);
    if (job == NULL) {
        return TRAVERSE_ERR_NOMEM;
    }
    job->filename = filename;
    job->result = TRAVERSE_ERR_THREAD;
    if (pthread_create(&thread, NULL, run_publish, job) != 0) {
        free(job);
        return TRAVERSE_ERR_THREAD;
    }
    if (pthread_join(thread, NULL) != 0) {
        /* The thread may still write the job: leak it rather than free it
         * under the thread. Joining only fails for invalid threads. */
        return TRAVERSE_ERR_THREAD;
    }
    result = job->result;
    free(job);
    return result;
}

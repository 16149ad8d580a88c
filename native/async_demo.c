/*
 * async_demo: detached worker threads that call back later (see
 * async_demo.h).
 */
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "async_demo.h"
#include "traverse.h"

typedef enum { JOB_COUNT, JOB_ABANDON, JOB_EMIT } JobKind;

typedef struct {
    JobKind kind;
    char* filename;
    int64_t n;
    AsyncDemoDoneFn done;
    AsyncDemoRetryItemFn item;
    AsyncDemoDestroyFn destroy;
    void* user_data;
    int blocks;
} Job;

static void count_start(void* user_data, int depth) {
    (void)user_data;
    (void)depth;
}

static void count_end(void* user_data, int open, int close) {
    Job* job = user_data;
    (void)open;
    (void)close;
    job->blocks++;
}

static void* run(void* arg) {
    Job* job = arg;
    if (job->kind == JOB_COUNT) {
        Callbacks cbs = {count_start, count_end};
        int result = traverse_file(job->filename, cbs, job);
        if (job->done != NULL) {
            job->done(job->user_data, result == TRAVERSE_OK ? job->blocks : result);
        }
    } else if (job->kind == JOB_EMIT) {
        int64_t i;
        for (i = 0; i < job->n; i++) {
            while (job->item != NULL && job->item(job->user_data, i) != 0) {
                sched_yield();
            }
        }
    }
    if (job->destroy != NULL) {
        job->destroy(job->user_data);
    }
    free(job->filename);
    free(job);
    return NULL;
}

static int start(Job* job) {
    pthread_t thread;
    pthread_attr_t attr;
    int failed;
    if (pthread_attr_init(&attr) != 0) {
        free(job->filename);
        free(job);
        return TRAVERSE_ERR_THREAD;
    }
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    failed = pthread_create(&thread, &attr, run, job) != 0;
    pthread_attr_destroy(&attr);
    if (failed) {
        free(job->filename);
        free(job);
        return TRAVERSE_ERR_THREAD;
    }
    return TRAVERSE_OK;
}

static Job* new_job(JobKind kind, AsyncDemoDestroyFn destroy, void* user_data) {
    Job* job = calloc(1, sizeof *job);
    if (job != NULL) {
        job->kind = kind;
        job->destroy = destroy;
        job->user_data = user_data;
    }
    return job;
}

int async_demo_count_blocks(const char* filename, AsyncDemoDoneFn done,
                            AsyncDemoDestroyFn destroy, void* user_data) {
    Job* job;
    size_t len;
    if (filename == NULL) {
        return TRAVERSE_ERR_ARG;
    }
    job = new_job(JOB_COUNT, destroy, user_data);
    if (job == NULL) {
        return TRAVERSE_ERR_NOMEM;
    }
    len = strlen(filename) + 1;
    job->filename = malloc(len);
    if (job->filename == NULL) {
        free(job);
        return TRAVERSE_ERR_NOMEM;
    }
    memcpy(job->filename, filename, len);
    job->done = done;
    return start(job);
}

int async_demo_abandon(AsyncDemoDestroyFn destroy, void* user_data) {
    Job* job = new_job(JOB_ABANDON, destroy, user_data);
    if (job == NULL) {
        return TRAVERSE_ERR_NOMEM;
    }
    return start(job);
}

int async_demo_emit(int64_t n, AsyncDemoRetryItemFn item,
                    AsyncDemoDestroyFn destroy, void* user_data) {
    Job* job;
    if (n < 0) {
        return TRAVERSE_ERR_ARG;
    }
    job = new_job(JOB_EMIT, destroy, user_data);
    if (job == NULL) {
        return TRAVERSE_ERR_NOMEM;
    }
    job->n = n;
    job->item = item;
    return start(job);
}

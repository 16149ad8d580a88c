/* traverse_files_parallel(): one pthread per file, same user_data. */
#include <pthread.h>
#include <stdlib.h>

#include "traverse.h"

typedef struct {
    const char* filename;
    Callbacks cbs;
    void* user_data;
    int result;
} FileJob;

static void* run_job(void* arg) {
    FileJob* job = arg;
    job->result = traverse_file(job->filename, job->cbs, job->user_data);
    return NULL;
}

int traverse_files_parallel(const char* const* filenames, int count,
                            Callbacks cbs, void* user_data, int* results) {
    FileJob* jobs;
    pthread_t* threads;
    int started;
    int i;
    int status = TRAVERSE_OK;
    int joined_all = 1;

    if (count < 0 || (count > 0 && filenames == NULL)) {
        return TRAVERSE_ERR_ARG;
    }
    if (count > TRAVERSE_MAX_FILES) {
        return TRAVERSE_ERR_TOO_MANY_FILES;
    }
    if (count == 0) {
        return TRAVERSE_OK;
    }
    jobs = calloc((size_t)count, sizeof *jobs);
    threads = calloc((size_t)count, sizeof *threads);
    if (jobs == NULL || threads == NULL) {
        free(jobs);
        free(threads);
        return TRAVERSE_ERR_NOMEM;
    }
    for (i = 0; i < count; i++) {
        jobs[i].filename = filenames[i];
        jobs[i].cbs = cbs;
        jobs[i].user_data = user_data;
        jobs[i].result = TRAVERSE_ERR_THREAD;
    }
    for (started = 0; started < count; started++) {
        if (pthread_create(&threads[started], NULL, run_job, &jobs[started]) != 0) {
            status = TRAVERSE_ERR_THREAD;
            break;
        }
    }
    for (i = 0; i < started; i++) {
        if (pthread_join(threads[i], NULL) != 0) {
            joined_all = 0;
        }
    }
    if (!joined_all) {
        /*
         * A thread we could not join may still be writing its job: leaking
         * the jobs is the only safe choice. pthread_join only fails for
         * invalid or self/deadlocking threads, which these are not.
         */
        free(threads);
        return TRAVERSE_ERR_THREAD;
    }
    if (results != NULL) {
        for (i = 0; i < count; i++) {
            results[i] = jobs[i].result;
        }
    }
    free(jobs);
    free(threads);
    return status;
}

/*
 * Internal to the traverse library: the scanner every file-reading entry
 * point shares, delivering each event to one or several subscribers.
 */
#ifndef HANDLE_REGISTRY_TRAVERSE_SCAN_H
#define HANDLE_REGISTRY_TRAVERSE_SCAN_H

#include <stddef.h>

#include "traverse.h"

/* Who receives events: `count` pairs of callbacks and user_data. */
typedef struct {
    const Callbacks* cbs;
    void* const* user_data;
    size_t count;
} TraverseSinks;

/*
 * Reads `filename` and delivers every event to each sink in order, on the
 * calling thread. Returns what traverse_file() documents.
 */
int traverse_scan_file(const char* filename, const TraverseSinks* sinks);

#endif /* HANDLE_REGISTRY_TRAVERSE_SCAN_H */

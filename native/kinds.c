/* kinds: see kinds.h. */
#include <stdlib.h>
#include <string.h>

#include "kinds.h"

typedef struct {
    char name[KINDS_MAX_NAME + 1];
    KindsCallFn fn;
    void* user_data;
    KindsDestroyFn destroy;
    int used;
} Entry;

struct KindsTable {
    Entry entries[KINDS_MAX_FUNCTIONS];
};

static Entry* find(KindsTable* table, const char* name) {
    int i;
    for (i = 0; i < KINDS_MAX_FUNCTIONS; i++) {
        if (table->entries[i].used && strcmp(table->entries[i].name, name) == 0) {
            return &table->entries[i];
        }
    }
    return NULL;
}

static void release(Entry* e) {
    KindsDestroyFn destroy = e->destroy;
    void* user_data = e->user_data;
    memset(e, 0, sizeof *e);
    if (destroy != NULL) {
        destroy(user_data);
    }
}

KindsTable* kinds_open(void) { return calloc(1, sizeof(KindsTable)); }

int kinds_create_function(KindsTable* table, const char* name, KindsCallFn fn,
                          void* user_data, KindsDestroyFn destroy) {
    Entry* e;
    int i;
    if (table == NULL || name == NULL || fn == NULL || strlen(name) > KINDS_MAX_NAME) {
        return KINDS_ERR_ARG;
    }
    e = find(table, name);
    if (e != NULL) {
        release(e);
    } else {
        for (i = 0; i < KINDS_MAX_FUNCTIONS && table->entries[i].used; i++) {
        }
        if (i == KINDS_MAX_FUNCTIONS) {
            return KINDS_ERR_FULL;
        }
        e = &table->entries[i];
    }
    strcpy(e->name, name);
    e->fn = fn;
    e->user_data = user_data;
    e->destroy = destroy;
    e->used = 1;
    return KINDS_OK;
}

int kinds_call(KindsTable* table, const char* name, int arg, int* out) {
    Entry* e;
    if (table == NULL || name == NULL || out == NULL) {
        return KINDS_ERR_ARG;
    }
    e = find(table, name);
    if (e == NULL) {
        return KINDS_ERR_NO_FUNCTION;
    }
    *out = e->fn(e->user_data, arg);
    return KINDS_OK;
}

int kinds_drop_function(KindsTable* table, const char* name) {
    Entry* e;
    if (table == NULL || name == NULL) {
        return KINDS_ERR_ARG;
    }
    e = find(table, name);
    if (e == NULL) {
        return KINDS_ERR_NO_FUNCTION;
    }
    release(e);
    return KINDS_OK;
}

int kinds_count(const KindsTable* table) {
    int i;
    int n = 0;
    if (table == NULL) {
        return 0;
    }
    for (i = 0; i < KINDS_MAX_FUNCTIONS; i++) {
        n += table->entries[i].used;
    }
    return n;
}

void kinds_close(KindsTable* table) {
    int i;
    if (table == NULL) {
        return;
    }
    for (i = 0; i < KINDS_MAX_FUNCTIONS; i++) {
        if (table->entries[i].used) {
            release(&table->entries[i]);
        }
    }
    free(table);
}

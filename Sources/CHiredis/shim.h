// Debian's libhiredis-dev (hiredis 0.14): its reply reader only (Spillway owns the socket and writes
// RESP itself). Only RedisSink imports this module.
#ifndef SPILLWAY_CHIREDIS_SHIM_H
#define SPILLWAY_CHIREDIS_SHIM_H
#include <hiredis/read.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

// Replies are read into an arena the connection owns, through hiredis's reply object functions
// (its documented hook for other reply types), instead of hiredis's own objects: those take a
// calloc each (an XADD's reply two, a TS.MADD's one per sample) and a free each. A reply lives until
// the next `spillway_arena_reset`, called once the caller has taken what it needs from it; the
// reader completes one reply per redisReaderGetReply, so no part of the next reply is in the arena
// then.
typedef struct spillway_reply {
    int type;                          // REDIS_REPLY_*
    int errors;                        // arrays: how many errors they hold, at any depth
    long long integer;
    size_t len;
    const char *str;                   // strings, statuses, errors: NUL-terminated copy
    size_t elements;
    struct spillway_reply **element;
} spillway_reply;

typedef struct spillway_arena_chunk {
    struct spillway_arena_chunk *next;
    size_t size, used;
    max_align_t data[];
} spillway_arena_chunk;

typedef struct spillway_arena {
    spillway_arena_chunk *first, *current;
} spillway_arena;

// Chunks of 64 KiB (below glibc's mmap threshold); a larger reply gets chunks of its own, freed at
// the next reset, so the arena holds one chunk between replies.
static inline void *spillway_arena_alloc(spillway_arena *a, size_t n) {
    n = (n + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
    spillway_arena_chunk *c = a->current;
    if (c == NULL || c->size - c->used < n) {
        size_t size = n > 65536 ? n : 65536;
        spillway_arena_chunk *fresh = (spillway_arena_chunk *)malloc(sizeof(spillway_arena_chunk) + size);
        if (fresh == NULL) return NULL;
        fresh->next = NULL;
        fresh->size = size;
        fresh->used = 0;
        if (c != NULL) c->next = fresh; else a->first = fresh;
        a->current = c = fresh;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    return p;
}

static inline void spillway_arena_reset(spillway_arena *a) {
    if (a->first == NULL) return;
    spillway_arena_chunk *c = a->first->next;
    while (c != NULL) {
        spillway_arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->first->next = NULL;
    a->first->used = 0;
    a->current = a->first;
}

static inline spillway_arena *spillway_arena_create(void) { return (spillway_arena *)calloc(1, sizeof(spillway_arena)); }

static inline void spillway_arena_destroy(spillway_arena *a) {
    if (a == NULL) return;
    spillway_arena_reset(a);
    free(a->first);
    free(a);
}

static inline spillway_reply *spillway_reply_new(const redisReadTask *task, int type) {
    spillway_reply *r = (spillway_reply *)spillway_arena_alloc((spillway_arena *)task->privdata, sizeof(spillway_reply));
    if (r == NULL) return NULL;
    memset(r, 0, sizeof(*r));
    r->type = type;
    if (task->parent != NULL) {
        spillway_reply *parent = (spillway_reply *)task->parent->obj;
        parent->element[task->idx] = r;
        if (type == REDIS_REPLY_ERROR) {
            for (const redisReadTask *t = task->parent; t != NULL; t = t->parent) ((spillway_reply *)t->obj)->errors += 1;
        }
    }
    return r;
}

static inline void *spillway_reply_string(const redisReadTask *task, char *str, size_t len) {
    spillway_reply *r = spillway_reply_new(task, task->type);
    if (r == NULL) return NULL;
    char *copy = (char *)spillway_arena_alloc((spillway_arena *)task->privdata, len + 1);
    if (copy == NULL) return NULL;
    memcpy(copy, str, len);
    copy[len] = 0;
    r->str = copy;
    r->len = len;
    return r;
}

static inline void *spillway_reply_array(const redisReadTask *task, int elements) {
    spillway_reply *r = spillway_reply_new(task, REDIS_REPLY_ARRAY);
    if (r == NULL) return NULL;
    if (elements > 0) {
        r->element = (spillway_reply **)spillway_arena_alloc((spillway_arena *)task->privdata, (size_t)elements * sizeof(spillway_reply *));
        if (r->element == NULL) return NULL;
        memset(r->element, 0, (size_t)elements * sizeof(spillway_reply *));
    }
    r->elements = elements > 0 ? (size_t)elements : 0;
    return r;
}

static inline void *spillway_reply_integer(const redisReadTask *task, long long value) {
    spillway_reply *r = spillway_reply_new(task, REDIS_REPLY_INTEGER);
    if (r != NULL) r->integer = value;
    return r;
}

static inline void *spillway_reply_nil(const redisReadTask *task) { return spillway_reply_new(task, REDIS_REPLY_NIL); }

// The arena owns every reply: nothing to free one by one.
static inline void spillway_reply_free(void *reply) { (void)reply; }

// A reply reader (hiredis's RESP parser, without a connection) that builds its replies in `arena`
// (which must outlive it). Spillway owns the socket and feeds the reader what it reads.
static inline redisReader *spillway_reader_create(spillway_arena *arena) {
    static redisReplyObjectFunctions functions = {
        spillway_reply_string, spillway_reply_array, spillway_reply_integer, spillway_reply_nil, spillway_reply_free,
    };
    redisReader *r = redisReaderCreateWithFunctions(&functions);
    if (r != NULL) r->privdata = arena;
    return r;
}
static inline int spillway_reader_err(const redisReader *r) { return r->err; }
static inline const char *spillway_reader_errstr(const redisReader *r) { return r->errstr; }

// The reply's i-th element (arrays).
static inline spillway_reply *spillway_reply_element(const spillway_reply *r, size_t i) { return r->element[i]; }
#endif

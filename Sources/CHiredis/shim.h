// Debian's libhiredis-dev (hiredis 0.14). Only RedisSink imports this module.
#ifndef SPILLWAY_CHIREDIS_SHIM_H
#define SPILLWAY_CHIREDIS_SHIM_H
#include <hiredis/hiredis.h>
#include <stddef.h>

// errstr is a char[128] array, which Swift sees as a tuple: hand out a pointer instead.
static inline const char *spillway_redis_errstr(const redisContext *c) { return c->errstr; }
static inline int spillway_redis_err(const redisContext *c) { return c->err; }
static inline int spillway_redis_fd(const redisContext *c) { return c->fd; }
// The reply's i-th element (arrays).
static inline redisReply *spillway_reply_element(const redisReply *r, size_t i) { return r->element[i]; }
#endif

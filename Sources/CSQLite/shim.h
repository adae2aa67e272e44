// Debian's libsqlite3-dev. Only Spool imports this module.
#ifndef SPILLWAY_CSQLITE_SHIM_H
#define SPILLWAY_CSQLITE_SHIM_H
#include <sqlite3.h>
// SQLITE_TRANSIENT is a macro Swift cannot import: the destructor that tells SQLite to copy.
static inline sqlite3_destructor_type spillway_sqlite_transient(void) { return SQLITE_TRANSIENT; }
#endif

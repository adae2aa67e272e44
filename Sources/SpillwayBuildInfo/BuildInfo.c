#include "SpillwayBuildInfo.h"

// `make release` writes spillway_build_info.h (SPILLWAY_BUILD_COMMIT, SPILLWAY_BUILD_DATE) into a
// directory of the build's scratch path and adds it to the include path with -Xcc -I; it is never in
// the source tree. A plain `swift build` has no such header: both are "unknown" then. Only this file
// includes it, so a new stamp recompiles this file alone and relinks.
#if defined(__has_include)
#if __has_include("spillway_build_info.h")
#include "spillway_build_info.h"
#endif
#endif

#ifndef SPILLWAY_BUILD_COMMIT
#define SPILLWAY_BUILD_COMMIT "unknown"
#endif
#ifndef SPILLWAY_BUILD_DATE
#define SPILLWAY_BUILD_DATE "unknown"
#endif

const char *spillway_build_commit(void) { return SPILLWAY_BUILD_COMMIT; }
const char *spillway_build_date(void) { return SPILLWAY_BUILD_DATE; }

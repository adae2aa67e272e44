#ifndef SPILLWAY_BUILD_INFO_H
#define SPILLWAY_BUILD_INFO_H

/// The git commit (12 hex digits, "-dirty" when the tree had uncommitted changes) and the UTC build
/// date the binary was stamped with by `make release` / `make install` / `make deb`; "unknown" for
/// a plain `swift build`, which does not stamp.
const char *spillway_build_commit(void);
const char *spillway_build_date(void);

#endif

import SpillwayCore
#if canImport(Glibc)
import Glibc
#endif

/// Expands `files` patterns into paths of regular files (symlinks to regular files included) by
/// walking the directories under each pattern's literal prefix. Bounded: at most `maxDepth` levels
/// under the prefix and `maxEntries` directory entries looked at per pattern; symlinked directories
/// are not followed (no loops).
struct GlobWalker {
    static let maxDepth = 16
    static let maxEntries = 200_000

    static func expand(_ globs: [Glob], exclude: [Glob]) -> [String] {
        var out = Set<String>()
        for g in globs {
            if g.isLiteral {
                if isRegularFile(g.pattern) { out.insert(g.pattern) }
                continue
            }
            let (base, depth) = literalPrefix(g.pattern)
            var budget = maxEntries
            walk(base, depth: depth, glob: g, into: &out, budget: &budget)
        }
        return out.filter { path in !isExcluded(path, exclude) }.sorted()
    }

    static func isExcluded(_ path: String, _ exclude: [Glob]) -> Bool {
        let name = path.split(separator: "/").last.map(String.init) ?? path
        for e in exclude {
            if e.matches(path) { return true }
            // A pattern without a slash also applies to the file name (`*.gz`).
            if !e.pattern.contains("/"), e.matches(name) { return true }
        }
        return false
    }

    /// The directory to walk from, and how many levels under it the pattern reaches (nil: `**`).
    static func literalPrefix(_ pattern: String) -> (String, Int?) {
        let parts = pattern.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        var i = 0
        while i < parts.count - 1, !parts[i].contains(where: { "*?[\\".contains($0) }) { i += 1 }
        var base = parts[0..<i].joined(separator: "/")
        if base.isEmpty { base = pattern.hasPrefix("/") ? "/" : "." }
        let rest = parts[i...]
        return (base, rest.contains { $0.contains("**") } ? nil : rest.count)
    }

    /// The names in `dir` (without `.` and `..`), at most `limit` entries looked at.
    static func entries(_ dir: String, limit: Int = maxEntries) -> [String] {
        guard limit > 0, let d = opendir(dir) else { return [] }
        defer { closedir(d) }
        var names: [String] = []
        var budget = limit
        while budget > 0, let entry = readdir(d) {
            budget -= 1
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    static func walk(_ dir: String, depth: Int?, glob: Glob, into out: inout Set<String>, budget: inout Int, level: Int = 0) {
        guard level < maxDepth, budget > 0 else { return }
        let names = entries(dir, limit: budget)
        budget -= names.count
        for name in names {
            let path = dir == "/" ? "/" + name : (dir == "." ? name : dir + "/" + name)
            var st = stat()
            guard lstat(path, &st) == 0 else { continue }
            let type = st.st_mode & S_IFMT
            if type == S_IFDIR {
                if depth.map({ level + 1 < $0 }) ?? true {
                    walk(path, depth: depth, glob: glob, into: &out, budget: &budget, level: level + 1)
                }
            } else if (depth == nil || level + 1 == depth), glob.matches(path), isRegularFile(path) {
                out.insert(path)
            }
        }
    }

    static func isRegularFile(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
    }
}

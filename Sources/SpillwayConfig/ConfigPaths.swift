import Foundation

/// Relative paths in the configuration (`data_dir`, `password_file`, tail `files` and `exclude`) are
/// resolved one way: against the directory of the config file (`--config`), never the working
/// directory.
public enum ConfigPaths {
    /// The absolute directory of `configPath` (against the working directory when it is relative).
    public static func directory(of configPath: String) -> String {
        let dir = (configPath as NSString).deletingLastPathComponent
        return normalized(dir.hasPrefix("/") ? dir : FileManager.default.currentDirectoryPath + "/" + dir)
    }

    /// `path` when absolute, else `base/path`; `.` and `..` components folded.
    public static func resolve(_ path: String, against base: String) -> String {
        normalized(path.hasPrefix("/") ? path : base + "/" + path)
    }

    /// Folds `.`, `..` and repeated slashes of an absolute path, without touching the file system.
    public static func normalized(_ path: String) -> String {
        var parts: [Substring] = []
        for part in path.split(separator: "/", omittingEmptySubsequences: true) {
            if part == "." { continue }
            if part == ".." { _ = parts.popLast(); continue }
            parts.append(part)
        }
        return "/" + parts.joined(separator: "/")
    }

    /// `path` with glob metacharacters escaped, to prefix a pattern.
    public static func escapedForGlob(_ path: String) -> String {
        var out = ""
        for c in path {
            if "*?[]\\".contains(c) { out.append("\\") }
            out.append(c)
        }
        return out
    }
}

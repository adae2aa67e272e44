import SpillwayCore
import TOMLKit

/// Reads typed options from one TOML table, reporting every problem (wrong type, bad duration,
/// size or glob, value out of range) to the loader with its file, line and key path, and at `finish()`
/// every key nobody asked for, with a "did you mean" among the keys that were asked for.
/// A problem yields the default, so one run of the loader finds all problems at once.
public struct OptionReader {
    let table: TOMLTable
    /// Key path of the table (`agent`, `inputs.cpu[0]`).
    public let path: String
    let file: SourceFile
    let sink: DiagnosticSink
    private var known: [String] = []
    /// Every key asked for, in order, with its default as TOML (`true`, `"10s"`, `[]`; "none" for
    /// an option without one): what `spillway plugins NAME` lists.
    public private(set) var asked: [(key: String, default: String)] = []

    private mutating func record(_ key: String, _ def: @autoclosure () -> String) {
        if !asked.contains(where: { $0.key == key }) { asked.append((key, def())) }
    }

    static func toml(_ s: String) -> String { "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" }
    static func toml(_ a: [String]) -> String { "[" + a.map { toml($0) }.joined(separator: ", ") + "]" }

    /// The directory relative paths are resolved against: the config file's (`--config`), absolute.
    public let baseDirectory: String

    init(table: TOMLTable, path: String, file: SourceFile, sink: DiagnosticSink, baseDirectory: String) {
        self.table = table
        self.path = path
        self.file = file
        self.sink = sink
        self.baseDirectory = baseDirectory
    }

    /// The file the table is in.
    public var filePath: String { file.path }

    func keyPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    /// Reports a problem with `key` (for checks that span options).
    public func error(_ key: String, _ message: String, fix: String? = nil) {
        sink.report(file, keyPath(key), message, fix: fix)
    }

    /// Where `key` is set (its file, line and key path; an empty message), to locate a problem
    /// found later (by `check`).
    public func location(_ key: String) -> Diagnostic {
        Diagnostic(file: file.path, line: file.line(of: keyPath(key)), keyPath: keyPath(key), message: "")
    }

    /// Reports something that works but is likely wrong (`check` prints it, `run` logs it).
    public func warning(_ key: String, _ message: String, fix: String? = nil) {
        sink.warnings.append(Diagnostic(file: file.path, line: file.line(of: keyPath(key)), keyPath: keyPath(key), message: message, fix: fix))
    }

    /// Globs, a relative one taken as relative to `baseDirectory` (its metacharacters escaped).
    /// `onlyWithSlash`: patterns without a `/` (which match file names) are left as they are.
    public mutating func pathGlobs(_ key: String, onlyWithSlash: Bool = false) -> [Glob] {
        globs(key).map { g in
            guard !g.pattern.hasPrefix("/"), !onlyWithSlash || g.pattern.contains("/") else { return g }
            return (try? Glob(ConfigPaths.escapedForGlob(baseDirectory) + "/" + g.pattern)) ?? g
        }
    }

    /// Whether the table sets `key` (and marks it known).
    public mutating func has(_ key: String) -> Bool {
        record(key, "none")
        known.append(key)
        return table.contains(key: key)
    }

    private mutating func value(_ key: String) -> (any TOMLValueConvertible)? {
        known.append(key)
        return table[key]
    }

    private func wrongType(_ key: String, _ v: any TOMLValueConvertible, expected: String, example: String) {
        sink.report(file, keyPath(key), "expected \(expected), found \(Self.typeName(v))", fix: "write e.g. \(key) = \(example)")
    }

    static func typeName(_ v: any TOMLValueConvertible) -> String {
        switch v.type {
        case .string: "a string"
        case .int: "an integer"
        case .double: "a float"
        case .bool: "a boolean"
        case .table: "a table"
        case .array: "an array"
        case .date, .time, .dateTime: "a date/time"
        }
    }

    public mutating func string(_ key: String, default def: String) -> String {
        record(key, Self.toml(def))
        return optionalString(key) ?? def
    }

    public mutating func optionalString(_ key: String) -> String? {
        record(key, "none")
        guard let v = value(key) else { return nil }
        guard let s = v.string else {
            wrongType(key, v, expected: "a string", example: "\"…\"")
            return nil
        }
        return s
    }

    public mutating func bool(_ key: String, default def: Bool) -> Bool {
        record(key, "\(def)")
        guard let v = value(key) else { return def }
        guard v.type == .bool, let b = v.bool else {
            wrongType(key, v, expected: "a boolean", example: "true")
            return def
        }
        return b
    }

    public mutating func int(_ key: String, default def: Int, range: ClosedRange<Int>) -> Int {
        record(key, "\(def)")
        guard let v = value(key) else { return def }
        guard v.type == .int, let i = v.int else {
            wrongType(key, v, expected: "an integer", example: "\(def)")
            return def
        }
        guard range.contains(i) else {
            error(key, "\(i) is out of range", fix: "use a value from \(range.lowerBound) to \(range.upperBound)")
            return def
        }
        return i
    }

    /// A duration string (`500ms`, `10s`, `5m`, `1h`), in nanoseconds.
    public mutating func duration(_ key: String, default def: Int64, minimum: Int64 = 0) -> Int64 {
        record(key, def == 0 && minimum > 0 ? "none" : Self.toml(Units.formatDuration(def)))
        return optionalDuration(key, minimum: minimum) ?? def
    }

    public mutating func optionalDuration(_ key: String, minimum: Int64 = 0) -> Int64? {
        record(key, "none")
        guard let v = value(key) else { return nil }
        guard let s = v.string else {
            wrongType(key, v, expected: "a duration string", example: "\"10s\"")
            return nil
        }
        guard let ns = Units.parseDuration(s) else {
            error(key, "\"\(s)\" is not a duration", fix: "use a number and a unit: \"500ms\", \"10s\", \"5m\", \"1h\"")
            return nil
        }
        guard ns >= minimum else {
            error(key, "\"\(s)\" is too short", fix: "use at least \(Units.formatDuration(minimum))")
            return nil
        }
        return ns
    }

    /// A size (`64KiB`, `1GiB`, `10MB`, or an integer number of bytes), in bytes.
    public mutating func size(_ key: String, default def: Int64, minimum: Int64 = 0) -> Int64 {
        record(key, Self.toml(Units.formatSize(def)))
        guard let v = value(key) else { return def }
        var bytes: Int64?
        if v.type == .int, let i = v.int { bytes = Int64(i) }
        else if let s = v.string {
            bytes = Units.parseSize(s)
            if bytes == nil {
                error(key, "\"\(s)\" is not a size", fix: "use a number and a unit: \"64KiB\", \"8MiB\", \"1GiB\", \"10MB\"")
                return def
            }
        } else {
            wrongType(key, v, expected: "a size string", example: "\"64KiB\"")
            return def
        }
        guard let b = bytes, b >= minimum else {
            error(key, "\(bytes ?? 0) bytes is too small", fix: "use at least \(minimum) bytes")
            return def
        }
        return b
    }

    public mutating func stringArray(_ key: String, default def: [String]) -> [String] {
        record(key, Self.toml(def))
        return optionalStringArray(key) ?? def
    }

    public mutating func optionalStringArray(_ key: String) -> [String]? {
        record(key, "none")
        guard let v = value(key) else { return nil }
        guard let array = v.array else {
            wrongType(key, v, expected: "an array of strings", example: "[\"a\", \"b\"]")
            return nil
        }
        var out: [String] = []
        for (i, element) in array.enumerated() {
            guard let s = element.string else {
                sink.report(file, keyPath(key), "element \(i) is \(Self.typeName(element)), expected a string",
                            fix: "quote it: \"\(element.debugDescription)\"")
                return nil
            }
            out.append(s)
        }
        return out
    }

    /// An array of glob patterns, each checked.
    public mutating func globs(_ key: String, default def: [String] = []) -> [Glob] {
        record(key, Self.toml(def))
        guard let patterns = optionalStringArray(key) ?? (def.isEmpty ? nil : def) else { return [] }
        var out: [Glob] = []
        for pattern in patterns {
            do {
                out.append(try Glob(pattern))
            } catch {
                self.error(key, "bad glob: \(error.description)")
            }
        }
        return out
    }

    /// A table of string values (`tags = { dc = "eu-1" }` or `[….tags]`), as tags sorted by key.
    public mutating func stringTable(_ key: String) -> [Tag] {
        record(key, "{}")
        guard let v = value(key) else { return [] }
        guard let t = v.table else {
            wrongType(key, v, expected: "a table of strings", example: "{ dc = \"eu-1\" }")
            return []
        }
        var out: [Tag] = []
        for k in t.keys.sorted() {
            guard let element = t[k] else { continue }
            guard let s = element.string else {
                sink.report(file, "\(keyPath(key)).\(k)", "expected a string, found \(Self.typeName(element))",
                            fix: "tag values are strings: \(k) = \"\(element.debugDescription)\"")
                continue
            }
            guard !k.isEmpty, !s.isEmpty else {
                sink.report(file, "\(keyPath(key)).\(k)", "tag keys and values must not be empty")
                continue
            }
            out.append(Tag(k, s))
        }
        return out
    }

    /// Reports every key of the table that no read asked for.
    public func finish() {
        for key in table.keys where !known.contains(key) {
            if let guess = closestMatch(to: key, in: known) {
                sink.report(file, keyPath(key), "unknown key \"\(key)\"", fix: "did you mean \"\(guess)\"?")
            } else {
                sink.report(file, keyPath(key), "unknown key \"\(key)\"",
                            fix: "known keys here: \(known.sorted().joined(separator: ", "))")
            }
        }
    }
}

/// One problem in the configuration: where it is, what is wrong, and how to fix it.
public struct Diagnostic: Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int?
    /// Key path inside the file (`inputs.cpu[0].percpu`), empty for whole-file problems.
    public var keyPath: String
    public var message: String
    public var fix: String?

    public init(file: String, line: Int?, keyPath: String, message: String, fix: String? = nil) {
        self.file = file
        self.line = line
        self.keyPath = keyPath
        self.message = message
        self.fix = fix
    }

    public var description: String {
        var s = file
        if let line { s += ":\(line)" }
        s += ": "
        if !keyPath.isEmpty { s += "\(keyPath): " }
        s += message
        if let fix { s += " (\(fix))" }
        return s
    }
}

/// Every problem found while loading, reported all at once. `spillway` prints them and exits 2.
public struct ConfigError: Error, Sendable, CustomStringConvertible {
    public var diagnostics: [Diagnostic]
    public init(diagnostics: [Diagnostic]) { self.diagnostics = diagnostics }
    public var description: String {
        let n = diagnostics.count
        return "\(n) problem\(n == 1 ? "" : "s") in the configuration:\n"
            + inFileOrder.map { "  \($0)" }.joined(separator: "\n")
    }

    /// The problems as a reader goes through the files: files in the order they were loaded, each
    /// file's problems by line (those without a line after, in the order found).
    public var inFileOrder: [Diagnostic] {
        var fileRank: [String: Int] = [:]
        for d in diagnostics where fileRank[d.file] == nil { fileRank[d.file] = fileRank.count }
        return diagnostics.enumerated().sorted { a, b in
            let (fa, fb) = (fileRank[a.element.file] ?? 0, fileRank[b.element.file] ?? 0)
            if fa != fb { return fa < fb }
            let (la, lb) = (a.element.line ?? .max, b.element.line ?? .max)
            if la != lb { return la < lb }
            return a.offset < b.offset
        }.map(\.element)
    }
}

/// Collects diagnostics while the loader walks the files.
final class DiagnosticSink {
    var items: [Diagnostic] = []
    /// Things that work but are likely wrong (`Config.warnings`).
    var warnings: [Diagnostic] = []

    func report(_ file: SourceFile, _ keyPath: String, _ message: String, fix: String? = nil) {
        items.append(Diagnostic(file: file.path, line: file.line(of: keyPath), keyPath: keyPath, message: message, fix: fix))
    }

    func report(path: String, line: Int? = nil, _ message: String, fix: String? = nil) {
        items.append(Diagnostic(file: path, line: line, keyPath: "", message: message, fix: fix))
    }
}

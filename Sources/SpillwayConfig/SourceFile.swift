/// One config file: its path, its text after `${VAR}` substitution, and where each key stands.
public struct SourceFile: Sendable {
    public let path: String
    public let text: String
    /// Key path (`agent.interval`, `inputs.cpu[0].percpu`, `inputs.cpu[0]`) -> 1-based line.
    let lines: [String: Int]

    init(path: String, text: String) {
        self.path = path
        self.text = text
        self.lines = SourceFile.locate(text)
    }

    /// The line of `keyPath`, or of its nearest enclosing table when the key itself is not written
    /// on a line of its own (inline tables, defaults).
    public func line(of keyPath: String) -> Int? {
        var path = Substring(keyPath)
        while true {
            if let line = lines[String(path)] { return line }
            guard let cut = path.lastIndex(where: { $0 == "." || $0 == "[" }) else { return nil }
            path = path[..<cut]
        }
    }

    /// A line-oriented scan of TOML that records where each table header and each `key =` line is.
    /// It only feeds error messages, so it aims at the shapes configs use, not all of TOML.
    static func locate(_ text: String) -> [String: Int] {
        var result: [String: Int] = [:]
        var arrayIndex: [String: Int] = [:]
        var current = ""
        var inMultiline: String?
        var lineNo = 0
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNo += 1
            let line = rawLine.drop { $0 == " " || $0 == "\t" }
            if let delimiter = inMultiline {
                if line.contains(delimiter) { inMultiline = nil }
                continue
            }
            if line.hasPrefix("[[") {
                guard let end = line.range(of: "]]") else { continue }
                let raw = normalizeKey(line[line.index(line.startIndex, offsetBy: 2)..<end.lowerBound])
                let base = withIndices(raw, arrayIndex, indexLast: false)
                result[base] = result[base] ?? lineNo
                let next = (arrayIndex[base] ?? -1) + 1
                arrayIndex[base] = next
                current = "\(base)[\(next)]"
                result[current] = result[current] ?? lineNo
            } else if line.hasPrefix("[") {
                guard let end = line.firstIndex(of: "]") else { continue }
                current = withIndices(normalizeKey(line[line.index(after: line.startIndex)..<end]), arrayIndex, indexLast: true)
                result[current] = result[current] ?? lineNo
            } else if let eq = keyEnd(line) {
                let key = normalizeKey(line[..<eq])
                guard !key.isEmpty else { continue }
                let full = current.isEmpty ? key : "\(current).\(key)"
                result[full] = result[full] ?? lineNo
                let value = line[line.index(after: eq)...].drop { $0 == " " || $0 == "\t" }
                for delimiter in ["\"\"\"", "'''"] where value.hasPrefix(delimiter) {
                    if !value.dropFirst(3).contains(delimiter) { inMultiline = delimiter }
                }
            }
        }
        return result
    }

    /// The `=` that ends a key on this line, outside quotes; nil for lines that are not `key = value`.
    private static func keyEnd(_ line: Substring) -> Substring.Index? {
        var quote: Character?
        for i in line.indices {
            let c = line[i]
            if let q = quote {
                if c == q { quote = nil }
            } else if c == "\"" || c == "'" {
                quote = c
            } else if c == "#" {
                return nil
            } else if c == "=" {
                return i
            }
        }
        return nil
    }

    /// `a . "b c" .d` -> `a.b c.d`.
    private static func normalizeKey(_ raw: Substring) -> String {
        var parts: [String] = []
        var part = ""
        var quote: Character?
        for c in raw {
            if let q = quote {
                if c == q { quote = nil } else { part.append(c) }
            } else if c == "\"" || c == "'" {
                quote = c
            } else if c == "." {
                parts.append(part)
                part = ""
            } else if c != " " && c != "\t" {
                part.append(c)
            }
        }
        parts.append(part)
        return parts.joined(separator: ".")
    }

    /// Puts the current array-of-tables index after each prefix that is one: `inputs.cpu.tags` ->
    /// `inputs.cpu[0].tags`. The last component gets one only when `indexLast` (a `[table]` header
    /// naming an element; not a `[[array]]` header, which starts a new element).
    private static func withIndices(_ path: String, _ arrayIndex: [String: Int], indexLast: Bool) -> String {
        var out = ""
        let components = path.split(separator: ".", omittingEmptySubsequences: false)
        for (n, component) in components.enumerated() {
            out = out.isEmpty ? String(component) : "\(out).\(component)"
            if n == components.count - 1 && !indexLast { break }
            if let i = arrayIndex[out] { out += "[\(i)]" }
        }
        return out
    }
}

/// `${VAR}` and `${VAR:-default}` substitution on a file's text, before TOML parsing. Comments are left
/// alone. A missing variable without a default, or an unclosed `${`, is reported with its line.
enum EnvSubstitution {
    struct Problem {
        var line: Int
        var message: String
        var fix: String
    }

    static func apply(_ text: String, environment: [String: String]) -> (String, [Problem]) {
        guard text.contains("${") else { return (text, []) }
        var out = ""
        out.reserveCapacity(text.utf8.count)
        var problems: [Problem] = []
        var line = 1
        var inComment = false
        var quote: Character?
        var i = text.startIndex
        while i < text.endIndex {
            let c = text[i]
            if c == "\n" {
                line += 1
                inComment = false
                if quote == "\"" || quote == "'" { quote = nil }
            } else if !inComment {
                if let q = quote {
                    if c == q { quote = nil } else if c == "\\", q == "\"" {
                        out.append(c)
                        i = text.index(after: i)
                        if i < text.endIndex { out.append(text[i]); i = text.index(after: i) }
                        continue
                    }
                } else if c == "\"" || c == "'" {
                    quote = c
                } else if c == "#" {
                    inComment = true
                }
            }
            if !inComment, c == "$", text[i...].hasPrefix("${") {
                let start = text.index(i, offsetBy: 2)
                guard let close = text[start...].firstIndex(where: { $0 == "}" || $0 == "\n" }), text[close] == "}" else {
                    problems.append(Problem(line: line, message: "unclosed ${ in a variable reference",
                                            fix: "write ${NAME} or ${NAME:-default}"))
                    out.append(c)
                    i = text.index(after: i)
                    continue
                }
                let body = text[start..<close]
                let name: Substring
                var fallback: Substring?
                if let sep = body.range(of: ":-") {
                    name = body[..<sep.lowerBound]
                    fallback = body[sep.upperBound...]
                } else {
                    name = body
                }
                let validName = !name.isEmpty && name.allSatisfy { $0 == "_" || $0.isASCII && ($0.isLetter || $0.isNumber) }
                if !validName {
                    problems.append(Problem(line: line, message: "\"${\(body)}\" is not a variable reference",
                                            fix: "variable names are letters, digits and _; write ${NAME} or ${NAME:-default}"))
                } else if let value = environment[String(name)], !(value.isEmpty && fallback != nil) {
                    out += value
                } else if let fallback {
                    out += fallback
                } else {
                    problems.append(Problem(line: line, message: "environment variable \(name) is not set",
                                            fix: "set \(name), or give a default: ${\(name):-value}"))
                }
                i = text.index(after: close)
                continue
            }
            out.append(c)
            i = text.index(after: i)
        }
        return (out, problems)
    }
}

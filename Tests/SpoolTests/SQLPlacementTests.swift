import Foundation
import Testing

/// Sources/Spool, found from this file (Tests/SpoolTests/…).
let spoolSources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Sources/Spool")

/// A string literal of a Swift source: its line and its text (an interpolation stands as `·`; the
/// literals inside it are literals of their own).
struct SourceLiteral: Equatable, CustomStringConvertible {
    var line: Int
    var text: String
    var description: String { "\(line): \(text.debugDescription)" }
}

/// The string literals of Swift source `text`; comments are skipped. Enough of Swift's lexing for
/// this package's sources: `"…"`, `"""…"""`, raw `#"…"#`, escapes, nested interpolations, `//` and
/// nested `/* */` comments.
func stringLiterals(in text: String) -> [SourceLiteral] {
    var scanner = LiteralScanner(s: Array(text.utf8))
    scanner.code(untilClosingParen: false)
    return scanner.found
}

private struct LiteralScanner {
    let s: [UInt8]
    var i = 0
    var line = 1
    var found: [SourceLiteral] = []

    static let quote = UInt8(ascii: "\""), hash = UInt8(ascii: "#"), backslash = UInt8(ascii: "\\"), newline = UInt8(ascii: "\n")

    func starts(_ prefix: String, at k: Int) -> Bool {
        let p = Array(prefix.utf8)
        return k + p.count <= s.count && Array(s[k..<(k + p.count)]) == p
    }

    func hashes(_ n: Int, at k: Int) -> Bool {
        k + n <= s.count && s[k..<(k + n)].allSatisfy { $0 == Self.hash }
    }

    /// Code up to the end, or (in an interpolation) up to its closing parenthesis.
    mutating func code(untilClosingParen: Bool) {
        var depth = 0
        while i < s.count {
            let c = s[i]
            if c == Self.newline {
                line += 1
                i += 1
            } else if starts("//", at: i) {
                while i < s.count, s[i] != Self.newline { i += 1 }
            } else if starts("/*", at: i) {
                var nesting = 0
                while i < s.count {
                    if starts("/*", at: i) {
                        nesting += 1
                        i += 2
                    } else if starts("*/", at: i) {
                        nesting -= 1
                        i += 2
                        if nesting == 0 { break }
                    } else {
                        if s[i] == Self.newline { line += 1 }
                        i += 1
                    }
                }
            } else if c == Self.quote || c == Self.hash {
                var k = i
                while k < s.count, s[k] == Self.hash { k += 1 }
                if k < s.count, s[k] == Self.quote {
                    let n = k - i
                    i = k
                    literal(hashCount: n)
                } else {
                    i = k
                }
            } else if c == UInt8(ascii: "(") {
                depth += 1
                i += 1
            } else if c == UInt8(ascii: ")") {
                i += 1
                if untilClosingParen, depth == 0 { return }
                depth -= 1
            } else {
                i += 1
            }
        }
    }

    /// A literal starting at `i` (its opening quote), with `hashCount` `#` before it.
    mutating func literal(hashCount: Int) {
        let startLine = line
        let multiline = starts("\"\"\"", at: i)
        let delimiter = multiline ? 3 : 1
        i += delimiter
        var text: [UInt8] = []
        while i < s.count {
            let c = s[i]
            if c == Self.quote, multiline ? starts("\"\"\"", at: i) : true, hashes(hashCount, at: i + delimiter) {
                i += delimiter + hashCount
                break
            }
            if c == Self.backslash, hashes(hashCount, at: i + 1), i + 1 + hashCount < s.count {
                let k = i + 1 + hashCount
                if s[k] == UInt8(ascii: "(") {
                    i = k + 1
                    text.append(contentsOf: "·".utf8)
                    code(untilClosingParen: true)
                } else {
                    if s[k] == Self.newline { line += 1 }
                    text.append(s[k])
                    i = k + 1
                }
                continue
            }
            if c == Self.newline {
                line += 1
                if !multiline { break }
            }
            text.append(c)
            i += 1
        }
        found.append(SourceLiteral(line: startLine, text: String(decoding: text, as: UTF8.self)))
    }
}

/// Whether a literal's text is (or holds) SQL: an upper-case SQL keyword (the way this package
/// writes SQL), or a statement's shape in any case.
func looksLikeSQL(_ text: String) -> Bool {
    let keyword = #/\b(SELECT|INSERT|UPDATE|DELETE|PRAGMA|BEGIN|COMMIT|ROLLBACK|CREATE|ALTER|DROP|REPLACE|VACUUM|SAVEPOINT|ATTACH|DETACH|REINDEX|ANALYZE|VALUES|FROM|WHERE)\b/#
    let shape = #/(?i)\bselect\b.*\bfrom\b|\binsert\s+(or\s+\w+\s+)?into\b|\bupdate\s+\w+\s+set\b|\bdelete\s+from\b|\b(create|alter|drop)\s+(table|index|view|trigger|unique)\b|\bpragma\b|^\s*(begin(\s+(deferred|immediate|exclusive))?(\s+transaction)?|commit(\s+transaction)?|rollback(\s+transaction)?|end(\s+transaction)?)\s*;?\s*$/#
    return text.contains(keyword) || text.contains(shape)
}

/// Every SQL statement of Sources/Spool is a named constant in Schema.swift: no other file of it
/// holds SQL in a string literal.
@Suite struct SQLPlacement {
    @Test func onlySchemaHoldsSQL() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: spoolSources.path).filter { $0.hasSuffix(".swift") }.sorted()
        #expect(names.contains("Schema.swift"))
        #expect(names.contains("Spool.swift"))
        #expect(names.count >= 6)
        var offending: [String] = []
        for name in names where name != "Schema.swift" {
            let source = try String(contentsOf: spoolSources.appendingPathComponent(name), encoding: .utf8)
            for literal in stringLiterals(in: source) where looksLikeSQL(literal.text) {
                offending.append("Sources/Spool/\(name):\(literal)")
            }
        }
        #expect(offending == [], "SQL belongs in Sources/Spool/Schema.swift, as a named constant")
    }

    /// The check sees Schema.swift's statements (so it would see them elsewhere).
    @Test func schemaStatementsAreSeen() throws {
        let source = try String(contentsOf: spoolSources.appendingPathComponent("Schema.swift"), encoding: .utf8)
        let sql = stringLiterals(in: source).filter { looksLikeSQL($0.text) }.map(\.text)
        #expect(sql.count >= 50)
        #expect(sql.contains("BEGIN IMMEDIATE"))
        #expect(sql.contains("COMMIT"))
        #expect(sql.contains("ROLLBACK"))
        #expect(sql.contains("SELECT id FROM batches ORDER BY id"))
        #expect(sql.contains("PRAGMA max_page_count=·"))
        #expect(sql.contains { $0.contains("CREATE TABLE IF NOT EXISTS batches") })
    }

    @Test func scannerFindsLiteralsNotComments() {
        let source = #"""
            // db.exec("DELETE FROM batches") in a comment
            /* "SELECT 1" /* nested */ "COMMIT" */
            let a = "plain \(f("nested", ")")) text"
            let b = """
                multi "line"
                """
            let c = #"raw "quoted" \(no)"#
            let d = "escaped \"quote\" and \\"
            """#
        #expect(stringLiterals(in: source) == [
            SourceLiteral(line: 3, text: "nested"),
            SourceLiteral(line: 3, text: ")"),
            SourceLiteral(line: 3, text: "plain · text"),
            SourceLiteral(line: 4, text: "\n    multi \"line\"\n    "),
            SourceLiteral(line: 7, text: #"raw "quoted" \(no)"#),
            SourceLiteral(line: 8, text: #"escaped "quote" and \"#),
        ])
    }

    @Test func whatCountsAsSQL() {
        for sql in ["SELECT id FROM batches", "PRAGMA page_size", "BEGIN IMMEDIATE", "COMMIT", "ROLLBACK",
                    "UPDATE batches SET payload = ?2", "delete from batches where id = 1", "pragma quick_check", "begin",
                    "insert or ignore into t values (1)", "create table t (x)"] {
            #expect(looksLikeSQL(sql), "\(sql)")
        }
        for message in ["·: quick_check failed", "requeued row ·: ·", "cannot open", "-wal", "/buffer.sqlite", "drop_oldest",
                        "update failed", "rollback failed: ·", "the batch was deleted", "selected from the buffer"] {
            #expect(!looksLikeSQL(message), "\(message)")
        }
    }
}

/// A shell-style pattern on bytes: `*` (any run, not `/`), `**` (any run, `/` included), `?` (one
/// byte, not `/`), `[abc]`, `[a-z]`, `[!a-z]` (or `[^a-z]`), and `\x` for a literal `x`.
/// Compiled once; `init` rejects malformed patterns (an unclosed `[`, an empty class, a trailing `\`).
public struct Glob: Sendable, Hashable, CustomStringConvertible {
    enum Token: Sendable, Hashable {
        case literal(UInt8)
        case any            // ?
        case star           // *
        case globstar       // **
        case set([ClosedRange<UInt8>], negated: Bool)
    }

    public let pattern: String
    let tokens: [Token]

    public var description: String { pattern }

    public struct SyntaxError: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    public init(_ pattern: String) throws(SyntaxError) {
        self.pattern = pattern
        let p = Array(pattern.utf8)
        var tokens: [Token] = []
        var i = 0
        while i < p.count {
            let c = p[i]
            switch c {
            case UInt8(ascii: "*"):
                if i + 1 < p.count, p[i + 1] == UInt8(ascii: "*") {
                    tokens.append(.globstar)
                    i += 2
                    while i < p.count, p[i] == UInt8(ascii: "*") { i += 1 }
                } else {
                    tokens.append(.star)
                    i += 1
                }
            case UInt8(ascii: "?"):
                tokens.append(.any)
                i += 1
            case UInt8(ascii: "\\"):
                guard i + 1 < p.count else {
                    throw SyntaxError(description: "pattern \"\(pattern)\" ends with a lone \\ (write \\\\ for a backslash)")
                }
                tokens.append(.literal(p[i + 1]))
                i += 2
            case UInt8(ascii: "["):
                var j = i + 1
                var negated = false
                if j < p.count, p[j] == UInt8(ascii: "!") || p[j] == UInt8(ascii: "^") {
                    negated = true
                    j += 1
                }
                var ranges: [ClosedRange<UInt8>] = []
                var closed = false
                var firstInClass = true
                while j < p.count {
                    var lo = p[j]
                    if lo == UInt8(ascii: "]"), !firstInClass {
                        closed = true
                        j += 1
                        break
                    }
                    firstInClass = false
                    if lo == UInt8(ascii: "\\"), j + 1 < p.count {
                        j += 1
                        lo = p[j]
                    }
                    if j + 2 < p.count, p[j + 1] == UInt8(ascii: "-"), p[j + 2] != UInt8(ascii: "]") {
                        let hi = p[j + 2]
                        guard lo <= hi else {
                            throw SyntaxError(description: "pattern \"\(pattern)\" has a backwards range \(Character(UnicodeScalar(lo)))-\(Character(UnicodeScalar(hi)))")
                        }
                        ranges.append(lo...hi)
                        j += 3
                    } else {
                        ranges.append(lo...lo)
                        j += 1
                    }
                }
                guard closed else {
                    throw SyntaxError(description: "pattern \"\(pattern)\" has a [ with no closing ] (write \\[ for a literal bracket)")
                }
                tokens.append(.set(ranges, negated: negated))
                i = j
            default:
                tokens.append(.literal(c))
                i += 1
            }
        }
        self.tokens = tokens
    }

    /// Whether the whole of `s` matches.
    public func matches(_ s: String) -> Bool {
        var s = s
        return s.withUTF8 { buf in Self.match(tokens[...], buf[...]) }
    }

    /// Whether the pattern has any wildcard (a plain path needs no directory walk).
    public var isLiteral: Bool {
        tokens.allSatisfy { if case .literal = $0 { return true } else { return false } }
    }

    private static func match(_ t: ArraySlice<Token>, _ s: Slice<UnsafeBufferPointer<UInt8>>) -> Bool {
        var t = t
        var s = s
        while let tok = t.first {
            switch tok {
            case .literal(let c):
                guard let b = s.first, b == c else { return false }
                s = s.dropFirst()
                t = t.dropFirst()
            case .any:
                guard let b = s.first, b != UInt8(ascii: "/") else { return false }
                s = s.dropFirst()
                t = t.dropFirst()
            case .set(let ranges, let negated):
                guard let b = s.first else { return false }
                let inSet = ranges.contains { $0.contains(b) }
                guard inSet != negated else { return false }
                s = s.dropFirst()
                t = t.dropFirst()
            case .star, .globstar:
                let crossesSlash: Bool = if case .globstar = tok { true } else { false }
                let rest = t.dropFirst()
                // `**/` also matches no directory at all.
                if crossesSlash, case .literal(UInt8(ascii: "/"))? = rest.first, match(rest.dropFirst(), s) {
                    return true
                }
                var candidate = s
                while true {
                    if match(rest, candidate) { return true }
                    guard let b = candidate.first else { return false }
                    if b == UInt8(ascii: "/"), !crossesSlash { return false }
                    candidate = candidate.dropFirst()
                }
            }
        }
        return s.isEmpty
    }
}

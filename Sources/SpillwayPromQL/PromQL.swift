#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The subset of PromQL that `spillway serve` answers (README, "Query API"): a selector
/// `NAME{label="v", label!="v", label=~"re", label!~"re"}`, optionally in one of the range functions
/// (`avg_over_time`, `min_over_time`, `max_over_time`, `sum_over_time`, `count_over_time`,
/// `last_over_time`, `rate`, `increase`) with a range (`[5m]`), and `sum|avg|min|max|count` with an
/// optional `by (labels)` around either. Number literals and arithmetic between numbers are
/// evaluated too (Grafana's "Save & test" asks for `1+1`). Anything else is a `ParseError` naming
/// what is not supported.
///
/// A hand-written recursive-descent parser over the query's UTF-8 bytes; pure (no I/O).
public enum PromQL {
    /// Parses `text`; bounded: at most `maxLength` bytes and `maxDepth` nested parentheses.
    public static func parse(_ text: String, maxLength: Int = 16_384, maxDepth: Int = 32) throws(ParseError) -> Expr {
        guard text.utf8.count <= maxLength else { throw ParseError("the query is longer than \(maxLength) bytes", at: 0) }
        var p = Parser(Array(text.utf8), maxDepth: maxDepth)
        let e = try p.expression()
        try p.skipSpace()
        guard p.atEnd else { throw p.unexpected("after the end of the expression") }
        if case .range = e { throw ParseError("a range vector (selector[range]) is only supported inside one of \(RangeFunction.list)", at: 0) }
        return e
    }

    /// A Prometheus duration (`500ms`, `5m`, `1h30m`, `2d`), as milliseconds; nil when not one.
    public static func duration(_ text: some StringProtocol) -> Int64? {
        var p = Parser(Array(text.utf8), maxDepth: 1)
        guard let d = try? p.durationLiteral(), p.atEnd, d > 0 else { return nil }
        return d
    }
}

/// Why a query cannot be answered: a syntax error or something outside the subset, with the byte
/// offset where it was found.
public struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var position: Int

    public init(_ message: String, at position: Int) {
        self.message = message
        self.position = position
    }

    public var description: String { "\(message) (at character \(position + 1))" }
}

/// A parsed query.
public indirect enum Expr: Sendable, Equatable {
    /// A number (a scalar in Prometheus's terms), or arithmetic between numbers, folded.
    case number(Double)
    /// An instant vector: the latest sample of each matching series.
    case selector(Selector)
    /// A range vector `selector[range]`: only valid as a range function's argument.
    case range(Selector, milliseconds: Int64)
    /// `avg_over_time(selector[range])` and the others.
    case rangeFunction(RangeFunction, Selector, milliseconds: Int64)
    /// `sum by (a, b) (expr)`.
    case aggregation(AggregationOp, by: [String]?, Expr)

    /// The value of a number (arithmetic between numbers, `1+1`, is folded into one when parsed).
    public var constant: Double? {
        if case .number(let v) = self { v } else { nil }
    }
}

public enum RangeFunction: String, Sendable, CaseIterable {
    case avgOverTime = "avg_over_time", minOverTime = "min_over_time", maxOverTime = "max_over_time"
    case sumOverTime = "sum_over_time", countOverTime = "count_over_time", lastOverTime = "last_over_time"
    case rate, increase

    static var list: String { allCases.map(\.rawValue).joined(separator: ", ") }
}

public enum AggregationOp: String, Sendable, CaseIterable {
    case sum, avg, min, max, count

    static var list: String { allCases.map(\.rawValue).joined(separator: ", ") }
}

public enum ArithmeticOp: String, Sendable {
    case add = "+", subtract = "-", multiply = "*", divide = "/", modulo = "%", power = "^"

    public func apply(_ a: Double, _ b: Double) -> Double {
        switch self {
        case .add: a + b
        case .subtract: a - b
        case .multiply: a * b
        case .divide: a / b
        case .modulo: a.truncatingRemainder(dividingBy: b)
        case .power: pow(a, b)
        }
    }
}

struct Parser {
    let b: [UInt8]
    var i = 0
    let maxDepth: Int
    var depth = 0

    init(_ bytes: [UInt8], maxDepth: Int) {
        b = bytes
        self.maxDepth = maxDepth
    }

    var atEnd: Bool { i >= b.count }

    // MARK: lexing helpers

    mutating func skipSpace() throws(ParseError) {
        while i < b.count {
            switch b[i] {
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\n"), UInt8(ascii: "\r"): i += 1
            case UInt8(ascii: "#"):
                while i < b.count, b[i] != UInt8(ascii: "\n") { i += 1 }
            default: return
            }
        }
    }

    func peek(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard i + u.count <= b.count else { return false }
        return Array(b[i..<i + u.count]) == u
    }

    mutating func accept(_ s: String) throws(ParseError) -> Bool {
        try skipSpace()
        guard peek(s) else { return false }
        i += s.utf8.count
        return true
    }

    mutating func expect(_ s: String, _ context: String) throws(ParseError) {
        guard try accept(s) else { throw unexpected("where \"\(s)\" was expected \(context)") }
    }

    func unexpected(_ context: String) -> ParseError {
        if atEnd { return ParseError("unexpected end of the query \(context)", at: i) }
        var j = i
        while j < b.count, j - i < 20, !Self.isSpace(b[j]) { j += 1 }
        let token = String(decoding: b[i..<max(j, i + 1)], as: UTF8.self)
        return ParseError("unexpected \"\(token)\" \(context)", at: i)
    }

    static func isSpace(_ c: UInt8) -> Bool { c == 32 || c == 9 || c == 10 || c == 13 }
    static func isIdentStart(_ c: UInt8) -> Bool { (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || c == 95 || c == 58 }
    static func isIdent(_ c: UInt8) -> Bool { isIdentStart(c) || (c >= 48 && c <= 57) }
    static func isDigit(_ c: UInt8) -> Bool { c >= 48 && c <= 57 }

    /// An identifier (metric or label name, keyword, function) at `i`, if any; not consumed.
    func identifier() -> String? {
        guard i < b.count, Self.isIdentStart(b[i]) else { return nil }
        var j = i
        while j < b.count, Self.isIdent(b[j]) { j += 1 }
        return String(decoding: b[i..<j], as: UTF8.self)
    }

    // MARK: grammar

    mutating func expression() throws(ParseError) -> Expr {
        try enter()
        defer { depth -= 1 }
        var left = try term()
        while true {
            try skipSpace()
            let start = i
            let op: ArithmeticOp
            if try accept("+") { op = .add } else if try accept("-") { op = .subtract } else { break }
            let right = try term()
            left = try Self.arithmetic(op, left, right, at: start)
        }
        try rejectBinaryKeywordsAndComparisons()
        return left
    }

    mutating func term() throws(ParseError) -> Expr {
        var left = try unary()
        while true {
            try skipSpace()
            let start = i
            let op: ArithmeticOp
            if try accept("*") { op = .multiply } else if try accept("/") { op = .divide } else if try accept("%") { op = .modulo } else { break }
            let right = try unary()
            left = try Self.arithmetic(op, left, right, at: start)
        }
        return left
    }

    /// `-x`, `+x`: looser than `^`, as in Prometheus (`-2^2` is -4).
    mutating func unary() throws(ParseError) -> Expr {
        try enter()
        defer { depth -= 1 }
        try skipSpace()
        let start = i
        if try accept("-") {
            let e = try unary()
            return try Self.arithmetic(.subtract, .number(0), e, at: start)
        }
        if try accept("+") { return try unary() }
        return try power()
    }

    /// `a ^ b`, right-associative; the exponent may have a sign (`2 ^ -1`).
    mutating func power() throws(ParseError) -> Expr {
        let base = try primary()
        try skipSpace()
        let start = i
        if try accept("^") {
            try enter()
            defer { depth -= 1 }
            let exponent = try unary()
            return try Self.arithmetic(.power, base, exponent, at: start)
        }
        return base
    }

    /// One level deeper (parentheses, signs, powers); past `maxDepth` the query is refused.
    mutating func enter() throws(ParseError) {
        depth += 1
        guard depth <= maxDepth else { throw ParseError("the query nests deeper than \(maxDepth) levels", at: i) }
    }

    /// Arithmetic between numbers, folded into the number it gives (so a long chain costs no more
    /// to evaluate than its length).
    static func arithmetic(_ op: ArithmeticOp, _ a: Expr, _ b: Expr, at: Int) throws(ParseError) -> Expr {
        guard case .number(let x) = a, case .number(let y) = b else {
            throw ParseError("binary operator \"\(op.rawValue)\" is only supported between numbers, not between series", at: at)
        }
        return .number(op.apply(x, y))
    }

    mutating func rejectBinaryKeywordsAndComparisons() throws(ParseError) {
        try skipSpace()
        for op in ["==", "!=", ">=", "<=", ">", "<"] where peek(op) {
            throw ParseError("comparison operator \"\(op)\" is not supported", at: i)
        }
        if let word = identifier(), ["and", "or", "unless", "bool", "on", "ignoring", "group_left", "group_right", "offset", "atan2"].contains(word) {
            throw ParseError(word == "offset" ? "the offset modifier is not supported" : "\"\(word)\" is not supported", at: i)
        }
        if peek("@") { throw ParseError("the @ modifier is not supported", at: i) }
    }

    mutating func primary() throws(ParseError) -> Expr {
        try skipSpace()
        let start = i
        if atEnd { throw unexpected("where an expression was expected") }
        if try accept("(") {
            let e = try expression()
            try expect(")", "to close the parenthesis")
            return try rangeSuffix(e, at: start)
        }
        if let n = try numberLiteral() { return .number(n) }
        if b[i] == UInt8(ascii: "{") {
            let sel = try selector(name: nil, at: start)
            return try rangeSuffix(.selector(sel), at: start)
        }
        guard let word = identifier() else { throw unexpected("where an expression was expected") }
        i += word.utf8.count
        let lower = word.lowercased()
        if let op = AggregationOp(rawValue: lower) { return try aggregation(op, at: start) }
        if ["without", "topk", "bottomk", "quantile", "stddev", "stdvar", "count_values", "group", "limitk", "limit_ratio"].contains(lower) {
            try skipSpace()
            if peek("(") || lower == "without" || peek("by") {
                throw ParseError("aggregation \"\(word)\" is not supported (supported: \(AggregationOp.list), with an optional by (labels))", at: start)
            }
        }
        if lower == "inf" || lower == "nan" { return .number(lower == "inf" ? .infinity : .nan) }
        try skipSpace()
        if peek("(") {
            guard let f = RangeFunction(rawValue: word) else {
                throw ParseError("function \"\(word)\" is not supported (supported: \(RangeFunction.list))", at: start)
            }
            return try rangeFunction(f, at: start)
        }
        let sel = try selector(name: word, at: start)
        return try rangeSuffix(.selector(sel), at: start)
    }

    /// `[range]` after a selector; a subquery (`[5m:1m]`) or a range after anything else is refused.
    mutating func rangeSuffix(_ e: Expr, at start: Int) throws(ParseError) -> Expr {
        try skipSpace()
        guard try accept("[") else {
            try rejectBinaryKeywordsAndComparisons()
            return e
        }
        try skipSpace()
        let at = i
        guard i < b.count, Self.isDigit(b[i]) else { throw ParseError("a range like [5m] was expected", at: at) }
        let ms = try durationLiteral()
        guard ms > 0 else { throw ParseError("a range must be longer than 0", at: at) }
        try skipSpace()
        if peek(":") { throw ParseError("subqueries ([range:resolution]) are not supported", at: i) }
        try expect("]", "to close the range")
        guard case .selector(let sel) = e else { throw ParseError("a range ([…]) is only supported right after a selector", at: start) }
        try rejectBinaryKeywordsAndComparisons()
        return .range(sel, milliseconds: ms)
    }

    mutating func rangeFunction(_ f: RangeFunction, at start: Int) throws(ParseError) -> Expr {
        try expect("(", "after \(f.rawValue)")
        let arg = try expression()
        try expect(")", "to close \(f.rawValue)(")
        guard case .range(let sel, let ms) = arg else {
            throw ParseError("\(f.rawValue) takes a selector with a range, like \(f.rawValue)(cpu_usage_user[5m])", at: start)
        }
        try rejectBinaryKeywordsAndComparisons()
        return .rangeFunction(f, sel, milliseconds: ms)
    }

    mutating func aggregation(_ op: AggregationOp, at start: Int) throws(ParseError) -> Expr {
        var by = try byClause()
        try expect("(", "after \(op.rawValue)")
        let inner = try expression()
        try expect(")", "to close \(op.rawValue)(")
        if let after = try byClause() {
            guard by == nil else { throw ParseError("\(op.rawValue) has two by clauses", at: start) }
            by = after
        }
        switch inner {
        case .selector, .rangeFunction, .aggregation: break
        default: throw ParseError("\(op.rawValue) takes a selector or a range function", at: start)
        }
        try rejectBinaryKeywordsAndComparisons()
        return .aggregation(op, by: by, inner)
    }

    /// `by (a, b)`; `without` is refused.
    mutating func byClause() throws(ParseError) -> [String]? {
        try skipSpace()
        if let w = identifier(), w.lowercased() == "without" {
            throw ParseError("\"without\" is not supported; list the labels to keep with by (…)", at: i)
        }
        guard let w = identifier(), w.lowercased() == "by" else { return nil }
        i += 2
        try expect("(", "after by")
        var labels: [String] = []
        while true {
            try skipSpace()
            if try accept(")") { break }
            guard let name = identifier() else { throw unexpected("where a label name was expected in by (…)") }
            i += name.utf8.count
            labels.append(name)
            if try accept(",") { continue }
            try expect(")", "to close by (…)")
            break
        }
        return labels
    }

    mutating func selector(name: String?, at start: Int) throws(ParseError) -> Selector {
        var matchers: [LabelMatcher] = []
        if let name { matchers.append(try! LabelMatcher("__name__", .equal, name)) }
        try skipSpace()
        if try accept("{") {
            while true {
                try skipSpace()
                if try accept("}") { break }
                let at = i
                guard let label = identifier() else { throw unexpected("where a label name was expected") }
                i += label.utf8.count
                try skipSpace()
                let op: LabelMatcher.Op
                if try accept("=~") { op = .matchesRegex } else if try accept("!~") { op = .notMatchesRegex } else if try accept("!=") { op = .notEqual } else if try accept("=") { op = .equal } else {
                    throw unexpected("where =, !=, =~ or !~ was expected after \(label)")
                }
                try skipSpace()
                let value = try stringLiteral()
                do throws(LabelMatcher.Invalid) {
                    matchers.append(try LabelMatcher(label, op, value))
                } catch {
                    throw ParseError("invalid regular expression \"\(value)\" for label \(label)", at: at)
                }
                if try accept(",") { continue }
                try expect("}", "to close the selector")
                break
            }
        }
        if name != nil, matchers.filter({ $0.label == "__name__" }).count > 1 {
            throw ParseError("the metric name is given twice", at: start)
        }
        // As Prometheus: a selector must have a matcher that does not match the empty value.
        guard matchers.contains(where: { !$0.matches(nil) }) else {
            throw ParseError("a selector needs a metric name or a label matcher that does not match the empty value", at: start)
        }
        return Selector(matchers)
    }

    mutating func stringLiteral() throws(ParseError) -> String {
        guard i < b.count, [UInt8(ascii: "\""), UInt8(ascii: "'"), UInt8(ascii: "`")].contains(b[i]) else {
            throw unexpected("where a quoted string was expected")
        }
        let quote = b[i]
        let start = i
        i += 1
        var out: [UInt8] = []
        while true {
            guard i < b.count else { throw ParseError("unterminated string", at: start) }
            let c = b[i]
            i += 1
            if c == quote { break }
            if c == UInt8(ascii: "\\"), quote != UInt8(ascii: "`") {
                guard i < b.count else { throw ParseError("unterminated string", at: start) }
                let e = b[i]
                i += 1
                switch e {
                case UInt8(ascii: "n"): out.append(10)
                case UInt8(ascii: "t"): out.append(9)
                case UInt8(ascii: "r"): out.append(13)
                case UInt8(ascii: "\\"), UInt8(ascii: "\""), UInt8(ascii: "'"): out.append(e)
                default:
                    // Regex escapes (`\.`, `\d`) are kept for the regex engine.
                    out.append(UInt8(ascii: "\\"))
                    out.append(e)
                }
                continue
            }
            out.append(c)
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// A number literal (`1`, `-` is unary), `1.5`, `.5`, `1e3`, `0x1f`; nil (nothing consumed) when none.
    /// A number followed by a duration unit is not a number.
    mutating func numberLiteral() throws(ParseError) -> Double? {
        guard i < b.count, Self.isDigit(b[i]) || (b[i] == UInt8(ascii: ".") && i + 1 < b.count && Self.isDigit(b[i + 1])) else { return nil }
        var j = i
        if peek("0x") || peek("0X") {
            j += 2
            while j < b.count, (Self.isDigit(b[j]) || (b[j] | 0x20 >= 97 && b[j] | 0x20 <= 102)) { j += 1 }
            guard let v = UInt64(String(decoding: b[i + 2..<j], as: UTF8.self), radix: 16) else { throw unexpected("in a number") }
            i = j
            return Double(v)
        }
        while j < b.count, Self.isDigit(b[j]) || b[j] == UInt8(ascii: ".") { j += 1 }
        if j < b.count, b[j] | 0x20 == UInt8(ascii: "e"), j + 1 < b.count, Self.isDigit(b[j + 1]) || ((b[j + 1] == 43 || b[j + 1] == 45) && j + 2 < b.count && Self.isDigit(b[j + 2])) {
            j += 2
            while j < b.count, Self.isDigit(b[j]) { j += 1 }
        }
        if j < b.count, Self.isIdentStart(b[j]) {
            throw ParseError("a duration (\(String(decoding: b[i..<min(b.count, j + 2)], as: UTF8.self))…) is only valid in a range, like [5m]", at: i)
        }
        guard let v = Double(String(decoding: b[i..<j], as: UTF8.self)) else { throw unexpected("in a number") }
        i = j
        return v
    }

    /// `1h30m`, `500ms`, `5m`, `2d`, `1w`, `1y`, or plain seconds (`30`, `1.5`): milliseconds.
    mutating func durationLiteral() throws(ParseError) -> Int64 {
        let start = i
        var total: Int64 = 0
        var parts = 0
        while i < b.count, Self.isDigit(b[i]) {
            var j = i
            while j < b.count, Self.isDigit(b[j]) { j += 1 }
            guard let n = Int64(String(decoding: b[i..<j], as: UTF8.self)) else { throw ParseError("a duration is too long", at: i) }
            var k = j
            while k < b.count, (b[k] >= 97 && b[k] <= 122) { k += 1 }
            let unit = String(decoding: b[j..<k], as: UTF8.self)
            let scale: Int64
            switch unit {
            case "ms": scale = 1
            case "s": scale = 1000
            case "m": scale = 60_000
            case "h": scale = 3_600_000
            case "d": scale = 86_400_000
            case "w": scale = 7 * 86_400_000
            case "y": scale = 365 * 86_400_000
            case "" where parts == 0:
                // Plain seconds, possibly with a fraction (`30`, `1.5`), as Prometheus's step takes.
                var f = j
                if f < b.count, b[f] == UInt8(ascii: ".") {
                    f += 1
                    while f < b.count, Self.isDigit(b[f]) { f += 1 }
                }
                guard f == b.count || !Self.isIdent(b[f]), let seconds = Double(String(decoding: b[i..<f], as: UTF8.self)) else {
                    throw ParseError("not a duration", at: start)
                }
                i = f
                let ms = (seconds * 1000).rounded()
                guard ms < 9e15 else { throw ParseError("a duration is too long", at: start) }
                return Int64(ms)
            default: throw ParseError("unknown duration unit \"\(unit)\" (ms, s, m, h, d, w, y)", at: j)
            }
            let (m, o1) = n.multipliedReportingOverflow(by: scale)
            let (t, o2) = total.addingReportingOverflow(m)
            guard !o1, !o2 else { throw ParseError("a duration is too long", at: start) }
            total = t
            parts += 1
            i = k
        }
        guard parts > 0 else { throw ParseError("not a duration", at: start) }
        return total
    }
}

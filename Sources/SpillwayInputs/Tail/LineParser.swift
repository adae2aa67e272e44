import SpillwayCore

/// `format`: how a line becomes fields.
public enum LogFormat: String, Sendable, CaseIterable {
    /// The line as `message`.
    case raw
    /// A JSON object: scalars become fields, nested objects and arrays are flattened with dots
    /// (`a.b`, `list.0`); nulls are left out.
    case json
    /// `key=value key2="quoted value" flag`: unquoted values become integers, floats or booleans when
    /// they read as one; a key without `=` is `true`.
    case logfmt
}

/// Turns one line into one record. Never fails: a line that does not parse (or whose timestamp does
/// not) is kept as `message` with `parse_error=true`.
public struct LineParser: Sendable {
    public var name: String
    public var format: LogFormat
    public var tagKeys: Set<String>
    public var timestampKey: String?
    public var timestampFormat: TimestampFormat

    public init(name: String = "log", format: LogFormat = .raw, tagKeys: [String] = [], timestampKey: String? = nil,
                timestampFormat: TimestampFormat = .rfc3339) {
        self.name = name
        self.format = format
        self.tagKeys = Set(tagKeys)
        self.timestampKey = timestampKey
        self.timestampFormat = timestampFormat
    }

    /// Nesting deeper than this is not parsed (the line is kept raw).
    static let maxDepth = 64

    public func parse(_ line: ArraySlice<UInt8>, truncated: Bool, now: Int64) -> Record {
        var fields: [Field] = []
        var ok = true
        switch format {
        case .raw: break
        case .json: ok = JSONFlattener.flatten(line, into: &fields)
        case .logfmt: ok = Logfmt.parse(line, into: &fields)
        }
        var timestamp = now
        var tags: [Tag] = []
        if format != .raw, ok {
            if let key = timestampKey {
                if let i = fields.firstIndex(where: { $0.key == key }), let t = timestampFormat.nanoseconds(fields[i].value) {
                    timestamp = t
                    fields.remove(at: i)
                } else {
                    ok = false
                }
            }
            if ok, !tagKeys.isEmpty {
                fields.removeAll { f in
                    guard tagKeys.contains(f.key) else { return false }
                    tags.append(Tag(f.key, f.value.text))
                    return true
                }
            }
            if ok, fields.isEmpty { fields.append(Field("message", .string(""))) }
        }
        if format == .raw || !ok {
            tags.removeAll()
            timestamp = now
            fields = [Field("message", .string(String(decoding: line, as: UTF8.self)))]
            if !ok { fields.append(Field("parse_error", .bool(true))) }
        }
        if truncated { fields.append(Field("truncated", .bool(true))) }
        return Record(name: name, tags: tags, fields: fields, timestamp: timestamp)
    }
}

/// Typed value of an unquoted token: integer, float, boolean, else string.
func inferValue(_ b: ArraySlice<UInt8>) -> FieldValue {
    let s = String(decoding: b, as: UTF8.self)
    if let i = Int64(s) { return .int(i) }
    if let first = b.first, first == UInt8(ascii: "-") || first == UInt8(ascii: ".") || (first >= 48 && first <= 57),
       let d = Double(s), d.isFinite {
        return .double(d)
    }
    if s == "true" { return .bool(true) }
    if s == "false" { return .bool(false) }
    return .string(s)
}

func setField(_ fields: inout [Field], _ key: String, _ value: FieldValue) {
    if let i = fields.firstIndex(where: { $0.key == key }) { fields[i].value = value } else { fields.append(Field(key, value)) }
}

enum Logfmt {
    static func isSpace(_ c: UInt8) -> Bool { c == 32 || c == 9 || c == 13 }

    static func parse(_ line: ArraySlice<UInt8>, into fields: inout [Field]) -> Bool {
        var i = line.startIndex
        let end = line.endIndex
        while true {
            while i < end, isSpace(line[i]) { i += 1 }
            if i == end { break }
            let keyStart = i
            while i < end, !isSpace(line[i]), line[i] != UInt8(ascii: "="), line[i] != UInt8(ascii: "\"") { i += 1 }
            guard i > keyStart else { return false }
            let key = String(decoding: line[keyStart..<i], as: UTF8.self)
            if i == end || isSpace(line[i]) {
                setField(&fields, key, .bool(true))
                continue
            }
            guard line[i] == UInt8(ascii: "=") else { return false }
            i += 1
            if i < end, line[i] == UInt8(ascii: "\"") {
                i += 1
                var value: [UInt8] = []
                var closed = false
                while i < end {
                    let c = line[i]
                    if c == UInt8(ascii: "\\"), i + 1 < end {
                        let n = line[i + 1]
                        switch n {
                        case UInt8(ascii: "n"): value.append(10)
                        case UInt8(ascii: "t"): value.append(9)
                        case UInt8(ascii: "r"): value.append(13)
                        default: value.append(n)
                        }
                        i += 2
                        continue
                    }
                    if c == UInt8(ascii: "\"") { closed = true; i += 1; break }
                    value.append(c)
                    i += 1
                }
                guard closed, i == end || isSpace(line[i]) else { return false }
                setField(&fields, key, .string(String(decoding: value, as: UTF8.self)))
            } else {
                let valueStart = i
                while i < end, !isSpace(line[i]) {
                    if line[i] == UInt8(ascii: "\"") || line[i] == UInt8(ascii: "=") { return false }
                    i += 1
                }
                setField(&fields, key, valueStart == i ? .string("") : inferValue(line[valueStart..<i]))
            }
        }
        return !fields.isEmpty
    }
}

/// A JSON reader over bytes that flattens one object into fields as it goes (no tree is built).
struct JSONFlattener {
    let b: ArraySlice<UInt8>
    var i: Int
    var depth = 0

    static func flatten(_ line: ArraySlice<UInt8>, into fields: inout [Field]) -> Bool {
        var p = JSONFlattener(b: line, i: line.startIndex)
        p.skipSpace()
        guard p.i < line.endIndex, line[p.i] == UInt8(ascii: "{") else { return false }
        guard p.object(prefix: "", into: &fields) else { return false }
        p.skipSpace()
        return p.i == line.endIndex
    }

    mutating func skipSpace() {
        while i < b.endIndex, b[i] == 32 || b[i] == 9 || b[i] == 10 || b[i] == 13 { i += 1 }
    }

    mutating func object(prefix: String, into fields: inout [Field]) -> Bool {
        depth += 1
        defer { depth -= 1 }
        guard depth <= LineParser.maxDepth else { return false }
        i += 1  // {
        skipSpace()
        if i < b.endIndex, b[i] == UInt8(ascii: "}") { i += 1; return true }
        while true {
            skipSpace()
            guard i < b.endIndex, b[i] == UInt8(ascii: "\""), let key = string() else { return false }
            skipSpace()
            guard i < b.endIndex, b[i] == UInt8(ascii: ":") else { return false }
            i += 1
            guard value(name: prefix.isEmpty ? key : prefix + "." + key, into: &fields) else { return false }
            skipSpace()
            guard i < b.endIndex else { return false }
            if b[i] == UInt8(ascii: ",") { i += 1; continue }
            if b[i] == UInt8(ascii: "}") { i += 1; return true }
            return false
        }
    }

    mutating func array(prefix: String, into fields: inout [Field]) -> Bool {
        depth += 1
        defer { depth -= 1 }
        guard depth <= LineParser.maxDepth else { return false }
        i += 1  // [
        skipSpace()
        if i < b.endIndex, b[i] == UInt8(ascii: "]") { i += 1; return true }
        var n = 0
        while true {
            guard value(name: prefix + "." + String(n), into: &fields) else { return false }
            n += 1
            skipSpace()
            guard i < b.endIndex else { return false }
            if b[i] == UInt8(ascii: ",") { i += 1; continue }
            if b[i] == UInt8(ascii: "]") { i += 1; return true }
            return false
        }
    }

    mutating func value(name: String, into fields: inout [Field]) -> Bool {
        skipSpace()
        guard i < b.endIndex else { return false }
        switch b[i] {
        case UInt8(ascii: "{"): return object(prefix: name, into: &fields)
        case UInt8(ascii: "["): return array(prefix: name, into: &fields)
        case UInt8(ascii: "\""):
            guard let s = string() else { return false }
            setField(&fields, name, .string(s))
            return true
        case UInt8(ascii: "t"): guard literal("true") else { return false }; setField(&fields, name, .bool(true)); return true
        case UInt8(ascii: "f"): guard literal("false") else { return false }; setField(&fields, name, .bool(false)); return true
        case UInt8(ascii: "n"): return literal("null")
        default:
            let start = i
            var integral = true
            while i < b.endIndex {
                let c = b[i]
                if c >= 48 && c <= 57 || c == UInt8(ascii: "-") { i += 1; continue }
                if c == UInt8(ascii: ".") || c == UInt8(ascii: "e") || c == UInt8(ascii: "E") || c == UInt8(ascii: "+") {
                    integral = false
                    i += 1
                    continue
                }
                break
            }
            guard i > start else { return false }
            let text = String(decoding: b[start..<i], as: UTF8.self)
            if integral, let v = Int64(text) { setField(&fields, name, .int(v)); return true }
            if integral, let v = UInt64(text) { setField(&fields, name, .uint(v)); return true }
            guard let d = Double(text), d.isFinite else { return false }
            setField(&fields, name, .double(d))
            return true
        }
    }

    mutating func literal(_ word: StaticString) -> Bool {
        let n = word.utf8CodeUnitCount
        guard i + n <= b.endIndex else { return false }
        let w = UnsafeBufferPointer(start: word.utf8Start, count: n)
        for k in 0..<n where b[i + k] != w[k] { return false }
        i += n
        return true
    }

    /// A string at `i` (on its opening quote), unescaped.
    mutating func string() -> String? {
        i += 1
        let start = i
        // Fast path: no escapes.
        while i < b.endIndex, b[i] != UInt8(ascii: "\""), b[i] != UInt8(ascii: "\\"), b[i] >= 0x20 { i += 1 }
        guard i < b.endIndex else { return nil }
        if b[i] == UInt8(ascii: "\"") {
            i += 1
            return String(decoding: b[start..<(i - 1)], as: UTF8.self)
        }
        var out = Array(b[start..<i])
        while i < b.endIndex {
            let c = b[i]
            if c == UInt8(ascii: "\"") { i += 1; return String(decoding: out, as: UTF8.self) }
            guard c >= 0x20 else { return nil }
            if c != UInt8(ascii: "\\") { out.append(c); i += 1; continue }
            guard i + 1 < b.endIndex else { return nil }
            let e = b[i + 1]
            i += 2
            switch e {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
            case UInt8(ascii: "b"): out.append(8)
            case UInt8(ascii: "f"): out.append(12)
            case UInt8(ascii: "n"): out.append(10)
            case UInt8(ascii: "r"): out.append(13)
            case UInt8(ascii: "t"): out.append(9)
            case UInt8(ascii: "u"):
                guard var scalar = hex4() else { return nil }
                if (0xD800..<0xDC00).contains(scalar) {
                    // A high surrogate must be followed by \u and a low one.
                    guard i + 1 < b.endIndex, b[i] == UInt8(ascii: "\\"), b[i + 1] == UInt8(ascii: "u") else { return nil }
                    i += 2
                    guard let low = hex4(), (0xDC00..<0xE000).contains(low) else { return nil }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00..<0xE000).contains(scalar) {
                    return nil
                }
                guard let u = Unicode.Scalar(scalar) else { return nil }
                out.append(contentsOf: Array(String(Character(u)).utf8))
            default: return nil
            }
        }
        return nil
    }

    mutating func hex4() -> UInt32? {
        guard i + 4 <= b.endIndex else { return nil }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = b[i]
            let d: UInt32
            switch c {
            case 48...57: d = UInt32(c - 48)
            case 65...70: d = UInt32(c - 55)
            case 97...102: d = UInt32(c - 87)
            default: return nil
            }
            v = v * 16 + d
            i += 1
        }
        return v
    }
}

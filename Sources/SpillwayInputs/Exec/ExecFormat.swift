import SpillwayCore

/// `data_format` of `exec` and `execd`: what the command prints on stdout.
public enum ExecDataFormat: String, Sendable, CaseIterable {
    /// Influx line protocol, one record per line.
    case influx
    /// JSON: objects `{"name": …, "tags": {…}, "fields": {…}, "timestamp": ns}`, alone or in arrays.
    case json
}

/// Turns a command's output into records. A part that is well formed but unusable (one bad line of
/// line protocol, one JSON object without `fields`) is left out and reported in `report.skipped`
/// (counted in `counters.input_errors`, the first of a kind logged with the offending text quoted);
/// the rest is kept. JSON that does not parse makes the whole output unusable: that throws.
public enum ExecOutput {
    /// Longest piece of a bad line quoted in a message.
    public static let quoteLimit = 200
    /// Bad parts of one output reported one by one; the others are only counted (memory stays
    /// bounded whatever the command prints).
    public static let maxReported = 100

    /// `text` quoted for a log line: at most `quoteLimit` bytes, control characters escaped.
    public static func quote(_ bytes: some Collection<UInt8>) -> String {
        let q = Quoting.quoted(String(decoding: bytes.prefix(quoteLimit), as: UTF8.self))
        return bytes.count > quoteLimit ? String(q.dropLast()) + "…\"" : q
    }

    /// The records of a whole output (`exec`). `source` names the command in reports; bad parts go
    /// to `report` (its first entries listed, all counted). Returns the bad parts not in `report`
    /// (always 0 now: the report counts them).
    @discardableResult
    public static func parse(_ output: [UInt8], format: ExecDataFormat, now: Int64, source: String,
                             into records: inout [Record], report: inout InputReport) throws(InputError) -> Int {
        switch format {
        case .influx:
            let (parsed, bad, moreBad) = LineProtocolParser.parseLines(output, defaultTimestamp: now, maxBad: maxReported)
            records.append(contentsOf: parsed)
            for b in bad {
                report.skip(.init(path: source, line: b.line, kind: "bad line",
                                            message: "not line protocol (\(b.error)), line dropped: \(quote(Array(b.text.utf8)))"))
            }
            // Past the parser's list, only counted (the report keeps the first entries itself).
            report.skipMore(moreBad)
            return 0
        case .json:
            var reader = JSONReader(bytes: output)
            var values: [JSONValue] = []
            do {
                while let v = try reader.next() { values.append(v) }
            } catch {
                let (line, text) = lineAt(output, offset: error.offset)
                throw InputError("output is not JSON (line \(line): \(error.message)), nothing kept: \(quote(text))")
            }
            for (n, v) in values.enumerated() {
                appendJSON(v, now: now, source: source, index: n + 1, into: &records, report: &report)
            }
            return 0
        }
    }

    /// The record(s) of one line of an `execd` process. A bad line is reported and dropped.
    public static func parseLine(_ line: ArraySlice<UInt8>, number: Int, format: ExecDataFormat, now: Int64, source: String,
                                 into records: inout [Record], report: inout InputReport) {
        switch format {
        case .influx:
            do {
                if let r = try LineProtocolParser.parse(line, defaultTimestamp: now) { records.append(r) }
            } catch {
                report.skip(.init(path: source, line: number, kind: "bad line",
                                            message: "not line protocol (\(error)), line dropped: \(quote(line))"))
            }
        case .json:
            var reader = JSONReader(bytes: Array(line))
            do {
                var values: [JSONValue] = []
                while let v = try reader.next() { values.append(v) }
                for v in values { appendJSON(v, now: now, source: source, index: number, into: &records, report: &report) }
            } catch {
                report.skip(.init(path: source, line: number, kind: "bad line",
                                            message: "not JSON (\(error.message)), line dropped: \(quote(line))"))
            }
        }
    }

    static func lineAt(_ bytes: [UInt8], offset: Int) -> (Int, ArraySlice<UInt8>) {
        let at = min(max(offset, 0), bytes.count)
        var line = 1
        var start = 0
        for i in 0..<at where bytes[i] == 0x0A {
            line += 1
            start = i + 1
        }
        var end = at
        while end < bytes.count, bytes[end] != 0x0A { end += 1 }
        return (line, bytes[start..<end])
    }

    static func appendJSON(_ value: JSONValue, now: Int64, source: String, index: Int,
                           into records: inout [Record], report: inout InputReport) {
        switch value {
        case .array(let items):
            for item in items { appendJSON(item, now: now, source: source, index: index, into: &records, report: &report) }
        case .object(let members):
            do {
                records.append(try record(members, now: now))
            } catch {
                report.skip(.init(path: source, line: index, kind: "bad object",
                                            message: "\(error.description), object dropped: \(quote(Array(value.text.utf8)))"))
            }
        default:
            report.skip(.init(path: source, line: index, kind: "bad object",
                                        message: "expected an object or an array of objects, value dropped: \(quote(Array(value.text.utf8)))"))
        }
    }

    /// One record from `{"name": "m", "tags": {"k": "v"}, "fields": {"f": 1}, "timestamp": ns}`.
    static func record(_ members: [(String, JSONValue)], now: Int64) throws(InputError) -> Record {
        var name: String?
        var tags: [Tag] = []
        var fields: [Field] = []
        var timestamp = now
        for (key, value) in members {
            switch key {
            case "name":
                guard case .string(let s) = value, !s.isEmpty else { throw InputError("\"name\" must be a non-empty string") }
                name = s
            case "tags":
                guard case .object(let t) = value else { throw InputError("\"tags\" must be an object of strings") }
                for (k, v) in t {
                    guard case .string(let s) = v else { throw InputError("tag \"\(k)\" must be a string") }
                    guard !k.isEmpty, !s.isEmpty else { throw InputError("tag keys and values must not be empty") }
                    tags.append(Tag(k, s))
                }
            case "fields":
                guard case .object(let f) = value else { throw InputError("\"fields\" must be an object") }
                for (k, v) in f {
                    guard !k.isEmpty else { throw InputError("field keys must not be empty") }
                    switch v {
                    case .int(let i): fields.append(Field(k, .int(i)))
                    case .uint(let u): fields.append(Field(k, .uint(u)))
                    case .double(let d): fields.append(Field(k, .double(d)))
                    case .bool(let b): fields.append(Field(k, .bool(b)))
                    case .string(let s): fields.append(Field(k, .string(s)))
                    case .null: continue
                    case .array, .object: throw InputError("field \"\(k)\" must be a number, string or boolean")
                    }
                }
            case "timestamp":
                guard case .int(let t) = value else { throw InputError("\"timestamp\" must be an integer (nanoseconds since the epoch)") }
                timestamp = t
            default:
                throw InputError("unknown key \"\(key)\" (known: name, tags, fields, timestamp)")
            }
        }
        guard let name else { throw InputError("no \"name\"") }
        guard !fields.isEmpty else { throw InputError("no \"fields\" (at least one number, string or boolean)") }
        return Record(name: name, tags: tags, fields: fields, timestamp: timestamp)
    }
}

/// A JSON value, members in document order.
enum JSONValue: Sendable {
    case null
    case bool(Bool)
    case int(Int64)
    case uint(UInt64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([(String, JSONValue)])

    /// Compact JSON text (for quoting a dropped object).
    var text: String {
        switch self {
        case .null: "null"
        case .bool(let b): b ? "true" : "false"
        case .int(let i): String(i)
        case .uint(let u): String(u)
        case .double(let d): String(d)
        case .string(let s): Quoting.quoted(s)
        case .array(let a): "[" + a.map(\.text).joined(separator: ",") + "]"
        case .object(let o): "{" + o.map { Quoting.quoted($0.0) + ":" + $0.1.text }.joined(separator: ",") + "}"
        }
    }
}

struct JSONSyntaxError: Error {
    var message: String
    var offset: Int
}

/// Reads a sequence of JSON values separated by white space (one document, or one per line).
/// Strings, literals and whitespace as `JSONFlattener` reads them; nesting bounded.
struct JSONReader {
    var p: JSONFlattener
    static let maxDepth = 32

    init(bytes: [UInt8]) { p = JSONFlattener(b: bytes[...], i: 0) }

    /// The next value, nil at the end.
    mutating func next() throws(JSONSyntaxError) -> JSONValue? {
        p.skipSpace()
        if p.i >= p.b.endIndex { return nil }
        return try value(depth: 0)
    }

    func fail(_ message: String) -> JSONSyntaxError { JSONSyntaxError(message: message, offset: p.i) }

    mutating func value(depth: Int) throws(JSONSyntaxError) -> JSONValue {
        guard depth < Self.maxDepth else { throw fail("nested deeper than \(Self.maxDepth)") }
        p.skipSpace()
        guard p.i < p.b.endIndex else { throw fail("unexpected end") }
        switch p.b[p.i] {
        case UInt8(ascii: "{"):
            p.i += 1
            var members: [(String, JSONValue)] = []
            p.skipSpace()
            if p.i < p.b.endIndex, p.b[p.i] == UInt8(ascii: "}") { p.i += 1; return .object(members) }
            while true {
                p.skipSpace()
                guard p.i < p.b.endIndex, p.b[p.i] == UInt8(ascii: "\"") else { throw fail("expected a key in quotes") }
                guard let key = p.string() else { throw fail("bad string") }
                p.skipSpace()
                guard p.i < p.b.endIndex, p.b[p.i] == UInt8(ascii: ":") else { throw fail("expected \":\"") }
                p.i += 1
                members.append((key, try value(depth: depth + 1)))
                p.skipSpace()
                guard p.i < p.b.endIndex else { throw fail("unexpected end in an object") }
                if p.b[p.i] == UInt8(ascii: ",") { p.i += 1; continue }
                if p.b[p.i] == UInt8(ascii: "}") { p.i += 1; return .object(members) }
                throw fail("expected \",\" or \"}\"")
            }
        case UInt8(ascii: "["):
            p.i += 1
            var items: [JSONValue] = []
            p.skipSpace()
            if p.i < p.b.endIndex, p.b[p.i] == UInt8(ascii: "]") { p.i += 1; return .array(items) }
            while true {
                items.append(try value(depth: depth + 1))
                p.skipSpace()
                guard p.i < p.b.endIndex else { throw fail("unexpected end in an array") }
                if p.b[p.i] == UInt8(ascii: ",") { p.i += 1; continue }
                if p.b[p.i] == UInt8(ascii: "]") { p.i += 1; return .array(items) }
                throw fail("expected \",\" or \"]\"")
            }
        case UInt8(ascii: "\""):
            guard let s = p.string() else { throw fail("bad string") }
            return .string(s)
        case UInt8(ascii: "t"):
            guard p.literal("true") else { throw fail("unexpected token") }
            return .bool(true)
        case UInt8(ascii: "f"):
            guard p.literal("false") else { throw fail("unexpected token") }
            return .bool(false)
        case UInt8(ascii: "n"):
            guard p.literal("null") else { throw fail("unexpected token") }
            return .null
        default:
            let start = p.i
            var integral = true
            while p.i < p.b.endIndex {
                let c = p.b[p.i]
                if c >= 48 && c <= 57 || c == UInt8(ascii: "-") { p.i += 1; continue }
                if c == UInt8(ascii: ".") || c == UInt8(ascii: "e") || c == UInt8(ascii: "E") || c == UInt8(ascii: "+") {
                    integral = false
                    p.i += 1
                    continue
                }
                break
            }
            guard p.i > start else { throw fail("unexpected character") }
            let text = String(decoding: p.b[start..<p.i], as: UTF8.self)
            if integral, let v = Int64(text) { return .int(v) }
            if integral, let v = UInt64(text) { return .uint(v) }
            guard let d = Double(text), d.isFinite else { p.i = start; throw fail("bad number \(text)") }
            return .double(d)
        }
    }
}

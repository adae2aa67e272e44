/// A line of Influx line protocol that cannot be read: what is wrong and at which byte (1-based).
public struct LineProtocolError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var column: Int

    public init(_ message: String, column: Int) {
        self.message = message
        self.column = column
    }

    public var description: String { "column \(column): \(message)" }
}

/// Reads Influx line protocol (`measurement[,tag=value…] field=value[,…] [timestamp]`) as its spec says:
/// - measurement: `\,` and `\ ` are a comma and a space; tag keys, tag values and field keys also `\=`;
///   `\t`, `\n`, `\r`, `\f` are read back as the control characters `LineProtocol.append` writes them
///   as; a backslash before any other character is itself;
/// - field values: a float (`1`, `-1.5`, `2e3`), an integer (`1i`), an unsigned integer (`1u`), a
///   boolean (`t`, `T`, `true`, `True`, `TRUE` and the same for false) or a string in double quotes
///   (`\"` and `\\` escaped; a newline inside is kept);
/// - the timestamp, when present, is an integer in nanoseconds; without one the record gets
///   `defaultTimestamp`;
/// - an empty line, or one starting with `#` (after spaces), is no record.
/// NaN and infinite floats, an empty measurement, a tag without `=`, a field without value,
/// anything after the timestamp are errors.
public enum LineProtocolParser {
    /// The record on `line` (without its newline; a trailing `\r` is ignored), nil for an empty or
    /// comment line.
    public static func parse(_ line: some Collection<UInt8>, defaultTimestamp: Int64) throws(LineProtocolError) -> Record? {
        var p = Cursor(bytes: Array(line))
        if let last = p.bytes.last, last == 0x0D { p.bytes.removeLast() }
        p.skipSpaces()
        if p.atEnd || p.peek == UInt8(ascii: "#") { return nil }
        return try p.record(defaultTimestamp: defaultTimestamp)
    }

    /// Every record of `text`, one per line; a line that cannot be read is returned with its number
    /// (1-based, counting every newline in `text`) and the error, the others are kept. A newline
    /// inside a quoted string field value belongs to the value. At most `maxBad` bad lines are
    /// returned; `moreBad` counts the others.
    public static func parseLines(_ text: some Collection<UInt8>, defaultTimestamp: Int64, maxBad: Int = .max)
        -> (records: [Record], bad: [(line: Int, text: String, error: LineProtocolError)], moreBad: Int) {
        var records: [Record] = []
        var bad: [(line: Int, text: String, error: LineProtocolError)] = []
        var moreBad = 0
        var physical = 1
        var startLine = 1
        var current: [UInt8] = []
        var inString = false
        var escaped = false
        var spaces = 0
        func flush() {
            do {
                if let r = try parse(current, defaultTimestamp: defaultTimestamp) { records.append(r) }
            } catch {
                if bad.count < maxBad { bad.append((startLine, String(decoding: current, as: UTF8.self), error)) } else { moreBad += 1 }
            }
            current.removeAll(keepingCapacity: true)
        }
        for byte in text {
            if byte == 0x0A { physical += 1 }
            if byte == 0x0A && !inString {
                flush()
                startLine = physical
                escaped = false
                spaces = 0
                continue
            }
            current.append(byte)
            if escaped { escaped = false; continue }
            if byte == UInt8(ascii: "\\") { escaped = true; continue }
            if byte == UInt8(ascii: " ") && !inString { spaces += 1 }
            // Quotes only open strings in the field set (after the first unescaped space).
            if byte == UInt8(ascii: "\""), spaces >= 1 { inString.toggle() }
        }
        if !current.isEmpty { flush() }
        return (records, bad, moreBad)
    }

    struct Cursor {
        var bytes: [UInt8]
        var i = 0

        var atEnd: Bool { i >= bytes.count }
        var peek: UInt8 { bytes[i] }

        mutating func skipSpaces() {
            while i < bytes.count, bytes[i] == UInt8(ascii: " ") || bytes[i] == 0x09 { i += 1 }
        }

        func fail(_ message: String) -> LineProtocolError { LineProtocolError(message, column: i + 1) }

        /// A name up to one of `stops` (unescaped), unescaped.
        mutating func name(stops: Set<UInt8>, escapable: Set<UInt8>) -> String {
            var out: [UInt8] = []
            while i < bytes.count {
                let c = bytes[i]
                if c == UInt8(ascii: "\\"), i + 1 < bytes.count {
                    let e = bytes[i + 1]
                    if escapable.contains(e) {
                        out.append(e)
                        i += 2
                        continue
                    }
                    switch e {
                    case UInt8(ascii: "t"): out.append(0x09); i += 2; continue
                    case UInt8(ascii: "n"): out.append(0x0A); i += 2; continue
                    case UInt8(ascii: "r"): out.append(0x0D); i += 2; continue
                    case UInt8(ascii: "f"): out.append(0x0C); i += 2; continue
                    default:
                        out.append(c)
                        i += 1
                        continue
                    }
                }
                if stops.contains(c) { break }
                out.append(c)
                i += 1
            }
            return String(decoding: out, as: UTF8.self)
        }

        static let comma = UInt8(ascii: ","), space = UInt8(ascii: " "), equals = UInt8(ascii: "=")

        mutating func record(defaultTimestamp: Int64) throws(LineProtocolError) -> Record {
            let measurement = name(stops: [Self.comma, Self.space], escapable: [Self.comma, Self.space])
            guard !measurement.isEmpty else { throw fail("empty measurement name") }
            var tags: [Tag] = []
            while !atEnd, peek == Self.comma {
                i += 1
                let key = name(stops: [Self.comma, Self.space, Self.equals], escapable: [Self.comma, Self.space, Self.equals])
                guard !key.isEmpty else { throw fail("empty tag key") }
                guard !atEnd, peek == Self.equals else { throw fail("tag \"\(key)\" has no \"=\"") }
                i += 1
                let value = name(stops: [Self.comma, Self.space, Self.equals], escapable: [Self.comma, Self.space, Self.equals])
                guard !value.isEmpty else { throw fail("tag \"\(key)\" has an empty value") }
                if !atEnd, peek == Self.equals { throw fail("unescaped \"=\" in the value of tag \"\(key)\"") }
                tags.append(Tag(key, value))
            }
            guard !atEnd, peek == Self.space else { throw fail("no fields (a space and key=value expected)") }
            skipSpaces()
            var fields: [Field] = []
            repeat {
                if !fields.isEmpty { i += 1 }
                let key = name(stops: [Self.comma, Self.space, Self.equals], escapable: [Self.comma, Self.space, Self.equals])
                guard !key.isEmpty else { throw fail("empty field key") }
                guard !atEnd, peek == Self.equals else { throw fail("field \"\(key)\" has no \"=\"") }
                i += 1
                fields.append(Field(key, try fieldValue(key)))
            } while !atEnd && peek == Self.comma
            var timestamp = defaultTimestamp
            if !atEnd {
                guard peek == Self.space else { throw fail("unexpected \"\(Character(Unicode.Scalar(peek)))\" after field values") }
                skipSpaces()
                if !atEnd {
                    let start = i
                    while !atEnd, peek != Self.space, peek != 0x09 { i += 1 }
                    let text = String(decoding: bytes[start..<i], as: UTF8.self)
                    guard let t = Int64(text) else {
                        i = start
                        throw fail("timestamp \"\(text)\" is not an integer (nanoseconds)")
                    }
                    timestamp = t
                    skipSpaces()
                    guard atEnd else { throw fail("unexpected text after the timestamp") }
                }
            }
            return Record(name: measurement, tags: tags, fields: fields, timestamp: timestamp)
        }

        mutating func fieldValue(_ key: String) throws(LineProtocolError) -> FieldValue {
            guard !atEnd else { throw fail("field \"\(key)\" has no value") }
            if peek == UInt8(ascii: "\"") {
                i += 1
                var out: [UInt8] = []
                while i < bytes.count {
                    let c = bytes[i]
                    if c == UInt8(ascii: "\\"), i + 1 < bytes.count, bytes[i + 1] == UInt8(ascii: "\"") || bytes[i + 1] == UInt8(ascii: "\\") {
                        out.append(bytes[i + 1])
                        i += 2
                        continue
                    }
                    if c == UInt8(ascii: "\"") {
                        i += 1
                        return .string(String(decoding: out, as: UTF8.self))
                    }
                    out.append(c)
                    i += 1
                }
                throw fail("string value of field \"\(key)\" has no closing quote")
            }
            let start = i
            while !atEnd, peek != Self.comma, peek != Self.space { i += 1 }
            let text = String(decoding: bytes[start..<i], as: UTF8.self)
            guard !text.isEmpty else { throw fail("field \"\(key)\" has no value") }
            switch text {
            case "t", "T", "true", "True", "TRUE": return .bool(true)
            case "f", "F", "false", "False", "FALSE": return .bool(false)
            default: break
            }
            if text.hasSuffix("i") {
                guard let v = Int64(text.dropLast()) else { i = start; throw fail("field \"\(key)\": \"\(text)\" is not a 64-bit integer") }
                return .int(v)
            }
            if text.hasSuffix("u") {
                guard let v = UInt64(text.dropLast()) else { i = start; throw fail("field \"\(key)\": \"\(text)\" is not an unsigned 64-bit integer") }
                return .uint(v)
            }
            // Digits, sign, point and exponent only (Double() would also take "nan", "inf", hex).
            let numeric = text.utf8.allSatisfy { c in
                (c >= 48 && c <= 57) || c == UInt8(ascii: "-") || c == UInt8(ascii: "+") || c == UInt8(ascii: ".") || c == UInt8(ascii: "e") || c == UInt8(ascii: "E")
            }
            guard numeric, let d = Double(text), d.isFinite else {
                i = start
                throw fail("field \"\(key)\": \"\(text)\" is not a number, boolean or quoted string")
            }
            return .double(d)
        }
    }
}

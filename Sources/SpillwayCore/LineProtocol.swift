/// Influx line protocol, escaped as its spec (and Telegraf's serializer) says:
/// - measurement: `,` and space escaped with `\`;
/// - tag keys, tag values and field keys: `,`, `=` and space escaped with `\`;
/// - string field values: in double quotes, `"` and `\` escaped with `\`;
/// - in all of those names, tab, newline, carriage return and form feed are written as `\t`, `\n`,
///   `\r`, `\f` (the protocol cannot carry them raw);
/// - integers end in `i`, unsigned integers in `u`; floats that are NaN or infinite are left out
///   (the protocol cannot carry them), and so are tags with an empty key or value;
/// - the timestamp is in nanoseconds.
public enum LineProtocol {
    /// Appends one line (with its trailing newline) for `record`. A record left with no field is
    /// written as nothing (the protocol needs at least one field).
    public static func append(_ record: Record, to out: inout [UInt8]) {
        let start = out.count
        escape(record.name, measurement: true, into: &out)
        for tag in record.tags where !tag.key.isEmpty && !tag.value.isEmpty {
            out.append(UInt8(ascii: ","))
            escape(tag.key, measurement: false, into: &out)
            out.append(UInt8(ascii: "="))
            escape(tag.value, measurement: false, into: &out)
        }
        var first = true
        for field in record.fields {
            if case .double(let d) = field.value, !d.isFinite { continue }
            out.append(first ? UInt8(ascii: " ") : UInt8(ascii: ","))
            first = false
            escape(field.key, measurement: false, into: &out)
            out.append(UInt8(ascii: "="))
            switch field.value {
            case .double(let d): out.append(contentsOf: formatDouble(d).utf8)
            case .int(let i):
                out.append(contentsOf: String(i).utf8)
                out.append(UInt8(ascii: "i"))
            case .uint(let u):
                out.append(contentsOf: String(u).utf8)
                out.append(UInt8(ascii: "u"))
            case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
            case .string(let s):
                out.append(UInt8(ascii: "\""))
                for byte in s.utf8 {
                    if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { out.append(UInt8(ascii: "\\")) }
                    out.append(byte)
                }
                out.append(UInt8(ascii: "\""))
            }
        }
        if first {
            out.removeSubrange(start...)
            return
        }
        out.append(UInt8(ascii: " "))
        out.append(contentsOf: String(record.timestamp).utf8)
        out.append(UInt8(ascii: "\n"))
    }

    /// The lines for `records`, in the order given.
    public static func encode(_ records: [Record]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(records.count * 160)
        for record in records { append(record, to: &out) }
        return String(decoding: out, as: UTF8.self)
    }

    /// Shortest round-tripping decimal form; integral values keep no exponent up to 1e16.
    public static func formatDouble(_ d: Double) -> String {
        if d == d.rounded(), abs(d) < 1e16 { return String(Int64(d)) }
        return String(d)
    }

    private static func escape(_ s: String, measurement: Bool, into out: inout [UInt8]) {
        for byte in s.utf8 {
            switch byte {
            case UInt8(ascii: ","), UInt8(ascii: " "):
                out.append(UInt8(ascii: "\\"))
                out.append(byte)
            case UInt8(ascii: "="):
                if !measurement { out.append(UInt8(ascii: "\\")) }
                out.append(byte)
            case 0x09: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
            case 0x0A: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
            case 0x0C: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "f")])
            case 0x0D: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
            default: out.append(byte)
            }
        }
    }

    /// Sorts records into the stable order `spillway once` prints: by name, then by tags.
    public static func stableSort(_ records: inout [Record]) {
        records.sort { a, b in
            if a.name != b.name { return a.name < b.name }
            for (ta, tb) in zip(a.tags, b.tags) {
                if ta.key != tb.key { return ta.key < tb.key }
                if ta.value != tb.value { return ta.value < tb.value }
            }
            if a.tags.count != b.tags.count { return a.tags.count < b.tags.count }
            return a.timestamp < b.timestamp
        }
    }
}

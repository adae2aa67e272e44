/// A Redis key template: literal text with `{host}`, `{name}`, `{field}` (timeseries only) and
/// `{tag.KEY}` placeholders. A tag the record lacks renders as the empty string.
public struct KeyTemplate: Sendable, Hashable, CustomStringConvertible {
    public enum Part: Sendable, Hashable {
        case literal([UInt8])
        case host
        case name
        case field
        case tag(String)
    }

    public let text: String
    public let parts: [Part]

    public var description: String { text }

    public struct SyntaxError: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    /// Parses a template; `allowField` admits `{field}` (timeseries keys).
    public init(_ text: String, allowField: Bool = false) throws(SyntaxError) {
        self.text = text
        var parts: [Part] = []
        var literal: [UInt8] = []
        let b = Array(text.utf8)
        var i = 0
        while i < b.count {
            if b[i] == UInt8(ascii: "{") {
                guard let close = b[i...].firstIndex(of: UInt8(ascii: "}")) else {
                    throw SyntaxError(description: "key template \"\(text)\" has a { with no closing }")
                }
                let name = String(decoding: b[(i + 1)..<close], as: UTF8.self)
                if !literal.isEmpty { parts.append(.literal(literal)); literal = [] }
                switch name {
                case "host": parts.append(.host)
                case "name": parts.append(.name)
                case "field" where allowField: parts.append(.field)
                default:
                    if name.hasPrefix("tag."), name.count > 4 {
                        parts.append(.tag(String(name.dropFirst(4))))
                    } else {
                        let known = allowField ? "{host}, {name}, {field}, {tag.KEY}" : "{host}, {name}, {tag.KEY}"
                        throw SyntaxError(description: "key template \"\(text)\" has an unknown placeholder {\(name)}; known: \(known)")
                    }
                }
                i = close + 1
            } else {
                literal.append(b[i])
                i += 1
            }
        }
        if !literal.isEmpty { parts.append(.literal(literal)) }
        guard !parts.isEmpty else { throw SyntaxError(description: "key template is empty") }
        self.parts = parts
    }

    /// Whether the template names `{host}`.
    public var hasHost: Bool { parts.contains(.host) }

    /// Tag keys the template names with `{tag.KEY}`.
    public var tagKeys: [String] {
        parts.compactMap { if case .tag(let k) = $0 { k } else { nil } }
    }

    /// Appends the key for `record` (and `field`, for timeseries) to `out`.
    public func render(_ record: Record, field: String = "", into out: inout [UInt8]) {
        for part in parts {
            switch part {
            case .literal(let l): out.append(contentsOf: l)
            case .host: out.appendUTF8(record.tag("host") ?? "")
            case .name: out.appendUTF8(record.name)
            case .field: out.appendUTF8(field)
            case .tag(let k): out.appendUTF8(record.tag(k) ?? "")
            }
        }
    }

    /// Appends the key for `record` with every `{field}` left out, and where each `{field}` goes
    /// (offsets into `out`, in order) to `fieldAt`: a record's keys for its fields are then this
    /// with each field's name put in (`FieldKeys`), not one rendering per field.
    public func render(_ record: Record, fieldAt: inout [Int], into out: inout [UInt8]) {
        for part in parts {
            switch part {
            case .literal(let l): out.append(contentsOf: l)
            case .host: out.appendUTF8(record.tag("host") ?? "")
            case .name: out.appendUTF8(record.name)
            case .field: fieldAt.append(out.count)
            case .tag(let k): out.appendUTF8(record.tag(k) ?? "")
            }
        }
    }
}

extension Array where Element == UInt8 {
    /// Appends a string's UTF-8 bytes, copied from its storage in one go when it has one.
    public mutating func appendUTF8(_ s: String) {
        if s.utf8.withContiguousStorageIfAvailable({ append(contentsOf: $0) }) == nil {
            append(contentsOf: s.utf8)
        }
    }
}

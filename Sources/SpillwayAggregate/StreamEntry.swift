import RedisSink
import SpillwayCore

/// One entry of a metrics stream as the agent writes it (`docs/redis-layouts.md`): each field of the
/// record, each tag as `tag_KEY`, and `timestamp` (the record's time in ms).
public struct StreamEntry: Sendable, Equatable {
    public var id: StreamID
    /// The entry was deleted (trimmed) while pending: Redis gives its ID without fields.
    public var deleted = false
    /// The record's time (ms): its `timestamp` field, else the ID's millisecond.
    public var timestampMs: Int64
    /// Its tags, sorted by key.
    public var tags: [Tag] = []
    /// Its numeric fields (a value that reads as a finite decimal number); strings and booleans are
    /// not aggregated.
    public var values: [(field: String, value: Double)] = []

    public static func == (a: StreamEntry, b: StreamEntry) -> Bool {
        a.id == b.id && a.deleted == b.deleted && a.timestampMs == b.timestampMs && a.tags == b.tags
            && a.values.map(\.field) == b.values.map(\.field) && a.values.map(\.value) == b.values.map(\.value)
    }

    public init(id: StreamID, timestampMs: Int64, tags: [Tag] = [], values: [(field: String, value: Double)] = []) {
        self.id = id
        self.timestampMs = timestampMs
        self.tags = tags
        self.values = values
    }

    /// An entry of an XREADGROUP, XAUTOCLAIM or XRANGE reply: `[id, [field, value, …]]` (`[id, nil]`
    /// for a deleted one). Nil when the reply is not an entry.
    public init?(reply: RedisReply) {
        guard case .array(let pair) = reply, pair.count == 2, let idText = pair[0].string, let id = StreamID(idText) else { return nil }
        self.id = id
        timestampMs = Int64(clamping: id.ms)
        guard case .array(let fields) = pair[1] else {
            deleted = true
            return
        }
        // The agent writes `timestamp` last: a record's own field of that name comes before it.
        var timestampAt = -1
        var i = fields.count - 2
        while i >= 0 {
            if case .bulk(let name) = fields[i], name.elementsEqual("timestamp".utf8) {
                timestampAt = i
                break
            }
            i -= 2
        }
        var sorted = true
        var k = 0
        while k + 1 < fields.count {
            defer { k += 2 }
            guard case .bulk(let name) = fields[k], case .bulk(let value) = fields[k + 1] else { continue }
            if k == timestampAt {
                if let ms = Int64(String(decoding: value, as: UTF8.self)) { timestampMs = ms }
            } else if name.count > 4, name[0] == UInt8(ascii: "t"), name[1] == UInt8(ascii: "a"), name[2] == UInt8(ascii: "g"), name[3] == UInt8(ascii: "_") {
                let tag = Tag(String(decoding: name[4...], as: UTF8.self), String(decoding: value, as: UTF8.self))
                if let last = tags.last, !(last.key < tag.key) { sorted = false }
                tags.append(tag)
            } else if let v = Self.number(value) {
                values.append((String(decoding: name, as: UTF8.self), v))
            }
        }
        if !sorted {
            var byKey: [String: String] = [:]
            for t in tags { byKey[t.key] = t.value }
            tags = byKey.keys.sorted().map { Tag($0, byKey[$0]!) }
        }
    }

    /// A finite decimal number (`finiteDecimal`), as the agent writes integers and floats; nil
    /// for anything else (`true`, `inf`, `0x10`, `1.2.3`, text).
    public static func number(_ b: [UInt8]) -> Double? { finiteDecimal(b) }
}

/// The start of the bucket of `ms` (buckets of `bucketMs` from the epoch), for times before the
/// epoch too.
@inline(__always)
public func bucketStart(_ ms: Int64, _ bucketMs: Int64) -> Int64 {
    let q = ms / bucketMs
    return (ms % bucketMs < 0 ? q - 1 : q) * bucketMs
}

extension KeyTemplate {
    /// Reads a key back: the text of each placeholder (`{host}`, `{name}`, `{tag.KEY}` as
    /// `tag.KEY`), or nil when `key` is not of this template. A placeholder takes at least one
    /// character; where a key reads several ways (a `:` inside a value), the earlier placeholders
    /// take the shorter text.
    public func match(_ key: String) -> [String: String]? {
        let k = Array(key.utf8)
        var captured: [String: String] = [:]
        func go(_ p: Int, _ at: Int) -> Bool {
            if p == parts.count { return at == k.count }
            switch parts[p] {
            case .literal(let lit):
                guard k.count - at >= lit.count, k[at..<(at + lit.count)].elementsEqual(lit) else { return false }
                return go(p + 1, at + lit.count)
            default:
                let name: String = switch parts[p] {
                case .host: "host"
                case .name: "name"
                case .field: "field"
                case .tag(let t): "tag." + t
                case .literal: ""
                }
                var end = at + 1
                while end <= k.count {
                    if go(p + 1, end) {
                        captured[name] = String(decoding: k[at..<end], as: UTF8.self)
                        return true
                    }
                    end += 1
                }
                return false
            }
        }
        return go(0, 0) ? captured : nil
    }
}

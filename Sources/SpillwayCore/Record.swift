/// A field value, as Telegraf and InfluxDB know them.
public enum FieldValue: Sendable, Hashable {
    case double(Double)
    case int(Int64)
    case uint(UInt64)
    case bool(Bool)
    case string(String)
}

/// A tag: a string key and a string value.
public struct Tag: Sendable, Hashable {
    public var key: String
    public var value: String
    public init(_ key: String, _ value: String) {
        self.key = key
        self.value = value
    }
}

/// A field: a name and a typed value.
public struct Field: Sendable, Hashable {
    public var key: String
    public var value: FieldValue
    public init(_ key: String, _ value: FieldValue) {
        self.key = key
        self.value = value
    }
}

/// What every input emits: a measurement name, tags, fields and a timestamp in nanoseconds since the
/// epoch. Tags are kept sorted by key with unique keys (a canonical order for keys and encoders);
/// fields keep the order the input gave them.
public struct Record: Sendable, Hashable {
    public var name: String
    public private(set) var tags: [Tag]
    public var fields: [Field]
    public var timestamp: Int64

    public init(name: String, tags: [Tag] = [], fields: [Field], timestamp: Int64) {
        self.name = name
        self.fields = fields
        self.timestamp = timestamp
        if Record.isStrictlySorted(tags) {
            self.tags = tags
            // Room for the common tags (host, global and instance tags) merged in later. (None for
            // a record without tags: it mostly adopts a shared list, see `adoptTags`, and an
            // allocation per tailed line would be thrown away.)
            if !tags.isEmpty { self.tags.reserveCapacity(tags.count + 4) }
        } else {
            self.tags = []
            self.tags.reserveCapacity(tags.count)
            for tag in tags { setTag(tag.key, tag.value) }
        }
    }

    /// A record whose tags are `sortedTags` as they are, sharing their storage: they must be sorted
    /// by key with unique keys (a tailed file's tags, made once with `setTag`; not checked here).
    public init(name: String, sortedTags: [Tag], fields: [Field], timestamp: Int64) {
        self.name = name
        self.tags = sortedTags
        self.fields = fields
        self.timestamp = timestamp
    }

    /// This record with `message` (a tailed line's text, held apart) as its first field.
    public func with(message: LineText?) -> Record {
        guard let message else { return self }
        var r = self
        r.fields.insert(Field("message", .string(message.string)), at: 0)
        return r
    }

    static func isStrictlySorted(_ tags: [Tag]) -> Bool {
        var i = 1
        while i < tags.count {
            if !(tags[i - 1].key < tags[i].key) { return false }
            i += 1
        }
        return true
    }

    /// Takes `sorted` (sorted by key, unique) as the tags of a record that has none, sharing its
    /// storage (no copy); otherwise merges them in as `addTagsIfAbsent` does.
    public mutating func adoptTags(_ sorted: [Tag]) {
        if tags.isEmpty, Record.isStrictlySorted(sorted) {
            tags = sorted
        } else {
            addTagsIfAbsent(sorted)
        }
    }

    /// Adds every tag of `defaults` (sorted by key, unique) whose key the record does not have, in one
    /// merge of the two sorted lists.
    public mutating func addTagsIfAbsent(_ defaults: [Tag]) {
        guard !defaults.isEmpty else { return }
        // Count the defaults that are missing, then merge from the back in place (no new array when
        // the capacity allows, which Record.init reserves for).
        var missing = 0
        var i = 0, j = 0
        while j < defaults.count {
            if i < tags.count, tags[i].key < defaults[j].key {
                i += 1
            } else if i < tags.count, tags[i].key == defaults[j].key {
                i += 1
                j += 1
            } else {
                missing += 1
                j += 1
            }
        }
        guard missing > 0 else { return }
        var write = tags.count + missing - 1
        var r = tags.count - 1
        var d = defaults.count - 1
        tags.append(contentsOf: repeatElement(Tag("", ""), count: missing))
        while d >= 0 {
            if r >= 0, tags[r].key > defaults[d].key {
                tags[write] = tags[r]
                r -= 1
            } else if r >= 0, tags[r].key == defaults[d].key {
                tags[write] = tags[r]  // the record's own tag wins
                r -= 1
                d -= 1
            } else {
                tags[write] = defaults[d]
                d -= 1
            }
            write -= 1
        }
    }

    /// The value of tag `key`, if any.
    public func tag(_ key: String) -> String? {
        tags.first { $0.key == key }?.value
    }

    /// The value of field `key`, if any.
    public func field(_ key: String) -> FieldValue? {
        fields.first { $0.key == key }?.value
    }

    /// Sets (or replaces) a tag, keeping the tags sorted by key.
    public mutating func setTag(_ key: String, _ value: String) {
        var lo = 0
        var hi = tags.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if tags[mid].key < key { lo = mid + 1 } else { hi = mid }
        }
        if lo < tags.count, tags[lo].key == key {
            tags[lo].value = value
        } else {
            tags.insert(Tag(key, value), at: lo)
        }
    }

    /// Adds a tag only when the record has none of that key (lower precedence than what is there).
    public mutating func addTagIfAbsent(_ key: String, _ value: String) {
        if tag(key) == nil { setTag(key, value) }
    }
}

extension FieldValue {
    /// The value as Redis stores it: shortest round-tripping decimal for floats, decimal integers,
    /// `true`/`false`, and strings as they are.
    public var text: String {
        switch self {
        case .double(let d): LineProtocol.formatDouble(d)
        case .int(let i): String(i)
        case .uint(let u): String(u)
        case .bool(let b): b ? "true" : "false"
        case .string(let s): s
        }
    }

    /// The value as a number, for timeseries; nil for strings and booleans.
    public var number: Double? {
        switch self {
        case .double(let d): d.isFinite ? d : nil
        case .int(let i): Double(i)
        case .uint(let u): Double(u)
        case .bool, .string: nil
        }
    }
}

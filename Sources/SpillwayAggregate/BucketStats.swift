import SpillwayCore

/// The figures of one field of one series over some entries: merged with another's, they are the
/// figures of both sets of entries, exactly (the sum is an `ExactSum`).
public struct FieldStats: Sendable, Equatable {
    public var count: Int64 = 0
    public var min: Double = .infinity
    public var max: Double = -.infinity
    public var sum = ExactSum()

    public init() {}

    public init(count: Int64, min: Double, max: Double, sum: ExactSum) {
        self.count = count
        self.min = min
        self.max = max
        self.sum = sum
    }

    public mutating func add(_ v: Double) {
        count += 1
        if v < min { min = v }
        if v > max { max = v }
        sum.add(v)
    }

    public mutating func merge(_ o: FieldStats) {
        count += o.count
        if o.min < min { min = o.min }
        if o.max > max { max = o.max }
        sum.add(o.sum)
    }

    /// The exact sum rounded once, divided by the count (rounded once more).
    public var avg: Double { sum.value / Double(count) }

    /// The figure of an aggregation: avg, min, max, sum or count.
    public func value(_ agg: Aggregation) -> Double {
        switch agg {
        case .avg: avg
        case .min: min
        case .max: max
        case .sum: sum.value
        case .count: Double(count)
        }
    }
}

/// The aggregations every numeric field gets, in the order they are written.
public enum Aggregation: String, Sendable, CaseIterable {
    case avg, min, max, sum, count
}

/// One bucket of one stream: per tag set (sorted by key), per field, its figures. This is what a
/// worker stores in Redis for the entries it read (a partial), and what a closed bucket's state
/// holds once its partials are merged (its base).
public struct BucketStats: Sendable, Equatable {
    public var series: [[Tag]: [String: FieldStats]] = [:]

    public init() {}

    public var isEmpty: Bool { series.isEmpty }

    /// Series (tag set and field) in it.
    public var seriesCount: Int { series.values.reduce(0) { $0 + $1.count } }

    public mutating func add(tags: [Tag], field: String, value: Double) {
        series[tags, default: [:]][field, default: FieldStats()].add(value)
    }

    /// One entry's values, of one tag set.
    public mutating func add(tags: [Tag], values: [(field: String, value: Double)]) {
        series[tags, default: [:]].addValues(values)
    }

    public mutating func merge(_ other: BucketStats) {
        for (tags, fields) in other.series {
            if series[tags] == nil {
                series[tags] = fields
                continue
            }
            for (field, stats) in fields { series[tags]![field, default: FieldStats()].merge(stats) }
        }
    }

    // MARK: - Stored form

    /// "SWA1", then per tag set: its tags, then per field: name, count, min, max, the sum's
    /// partials. Integers little-endian, strings as a u32 length and UTF-8, doubles as their bits.
    /// Tag sets and fields in a stable order, so equal stats encode alike.
    public func encoded() -> [UInt8] {
        var out: [UInt8] = Array("SWA1".utf8)
        func u32(_ v: Int) { withUnsafeBytes(of: UInt32(truncatingIfNeeded: v).littleEndian) { out.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func str(_ s: String) {
            u32(s.utf8.count)
            out.append(contentsOf: s.utf8)
        }
        let tagSets = series.keys.sorted { Self.less($0, $1) }
        u32(tagSets.count)
        for tags in tagSets {
            u32(tags.count)
            for t in tags { str(t.key); str(t.value) }
            let fields = series[tags]!
            u32(fields.count)
            for name in fields.keys.sorted() {
                let f = fields[name]!
                str(name)
                u64(UInt64(bitPattern: f.count))
                u64(f.min.bitPattern)
                u64(f.max.bitPattern)
                u32(f.sum.partials.count)
                for p in f.sum.partials { u64(p.bitPattern) }
            }
        }
        return out
    }

    static func less(_ a: [Tag], _ b: [Tag]) -> Bool {
        for (x, y) in zip(a, b) {
            if x.key != y.key { return x.key < y.key }
            if x.value != y.value { return x.value < y.value }
        }
        return a.count < b.count
    }

    /// Reads `encoded()`'s form back; nil when it is not that (cut short, or another format).
    public static func decode(_ bytes: [UInt8]) -> BucketStats? {
        var i = 0
        func take(_ n: Int) -> ArraySlice<UInt8>? {
            guard n >= 0, bytes.count - i >= n else { return nil }
            defer { i += n }
            return bytes[i..<(i + n)]
        }
        func u32() -> Int? {
            guard let b = take(4) else { return nil }
            return Int(b.reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
        }
        func u64() -> UInt64? {
            guard let b = take(8) else { return nil }
            return b.reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        }
        func str() -> String? {
            guard let n = u32(), let b = take(n) else { return nil }
            return String(decoding: b, as: UTF8.self)
        }
        guard take(4).map(Array.init) == Array("SWA1".utf8), let nTagSets = u32() else { return nil }
        var stats = BucketStats()
        for _ in 0..<nTagSets {
            guard let nTags = u32(), nTags <= bytes.count else { return nil }
            var tags: [Tag] = []
            for _ in 0..<nTags {
                guard let k = str(), let v = str() else { return nil }
                tags.append(Tag(k, v))
            }
            guard let nFields = u32(), nFields <= bytes.count else { return nil }
            var fields: [String: FieldStats] = [:]
            for _ in 0..<nFields {
                guard let name = str(), let count = u64(), let min = u64(), let max = u64(), let np = u32(), np <= 4096 else { return nil }
                var partials: [Double] = []
                for _ in 0..<np {
                    guard let p = u64() else { return nil }
                    partials.append(Double(bitPattern: p))
                }
                fields[name] = FieldStats(count: Int64(bitPattern: count), min: Double(bitPattern: min), max: Double(bitPattern: max),
                                          sum: ExactSum(partials: partials))
            }
            stats.series[tags] = fields
        }
        guard i == bytes.count else { return nil }
        return stats
    }
}

extension Dictionary where Key == String, Value == FieldStats {
    mutating func addValues(_ values: [(field: String, value: Double)]) {
        for (f, v) in values { self[f, default: FieldStats()].add(v) }
    }
}

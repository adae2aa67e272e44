/// How a bucket's samples become its value (RedisTimeSeries' aggregators of the same names).
public enum Aggregation: String, Sendable, CaseIterable {
    case avg, min, max, sum, count, last

    /// The rollup aggregation whose buckets give this one exactly when combined into larger
    /// buckets (`avg` of `avg` rollups is exact when the rollup's buckets hold as many samples
    /// each, as a collection at a fixed interval gives).
    var rollupSource: String { rawValue }

    /// How a rollup's buckets combine into a larger bucket: counts add up; the others are taken
    /// again.
    var overRollup: Aggregation { self == .count ? .sum : self }
}

/// A bucket being filled, in time order.
struct Accumulator {
    var count = 0
    var sum = 0.0
    var min = Double.infinity
    var max = -Double.infinity
    var last = 0.0

    mutating func add(_ v: Double) {
        count += 1
        sum += v
        if v < min { min = v }
        if v > max { max = v }
        last = v
    }

    func value(_ a: Aggregation) -> Double {
        switch a {
        case .avg: sum / Double(count)
        case .min: min
        case .max: max
        case .sum: sum
        case .count: Double(count)
        case .last: last
        }
    }
}

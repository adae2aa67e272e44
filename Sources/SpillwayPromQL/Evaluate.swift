/// One sample: milliseconds since the epoch and a value.
public struct Sample: Sendable, Equatable {
    public var t: Int64
    public var v: Double

    public init(_ t: Int64, _ v: Double) {
        self.t = t
        self.v = v
    }
}

/// A series: its labels (`__name__` included while it has one) and samples in time order.
public struct Series: Sendable, Equatable {
    public var labels: [String: String]
    public var samples: [Sample]

    public init(labels: [String: String], samples: [Sample]) {
        self.labels = labels
        self.samples = samples
    }
}

/// Where the evaluator reads series from (`spillway serve`: Redis, through SpillwayQuery).
public protocol SeriesSource {
    /// The raw samples, in `[from, to]` (ms), of every series `selector` picks; the labels carry
    /// `__name__`. Series without a sample there may be left out.
    func samples(_ selector: Selector, from: Int64, to: Int64) throws -> [Series]

    /// `function` over `selector` in windows of `step` ms ending at `start`, `start + step`, … `end`
    /// (each window `(t - step, t]`), computed by Redis or read from a rollup; each sample is
    /// stamped with its window's end. Nil when the source cannot (then raw samples are used).
    /// Only asked for the `*_over_time` functions.
    func windows(_ selector: Selector, function: RangeFunction, start: Int64, end: Int64, step: Int64) throws -> [Series]?

    /// The label sets (`__name__` included) of the series any of `selectors` picks (every series
    /// when empty) that exist in `[from, to]` (ms; a source that cannot tell may list every one).
    func labelSets(_ selectors: [Selector], from: Int64, to: Int64) throws -> [[String: String]]
}

/// The result of a query: a scalar or one series per label set, each with its points at the
/// evaluation times (a point only where the expression has a value).
public enum QueryValue: Sendable, Equatable {
    case scalar([Sample])
    case vector([Series])
}

/// Evaluates an `Expr` at `start`, `start + step`, … `end` (an instant query: start == end), with
/// Prometheus's semantics for the subset:
/// - a selector takes each series' newest sample at or before t, no older than `lookback` (5 min);
/// - a range function takes the samples in `(t - range, t]`; `rate` and `increase` extrapolate as
///   Prometheus does (counter resets included) and need two samples;
/// - range functions and aggregations drop `__name__`; `by (…)` keeps only the labels it names.
public struct Evaluator: Sendable {
    public var lookback: Int64
    /// Series a query may select, and points per series (Prometheus's own limit is 11,000).
    public var maxSeries: Int
    public var maxPoints: Int
    /// Raw samples a query may read in all.
    public var maxSamples: Int

    /// Prometheus's default lookback: 5 minutes (ms).
    public static let defaultLookback: Int64 = 300_000

    public init(lookback: Int64 = Evaluator.defaultLookback, maxSeries: Int = 10_000, maxPoints: Int = 11_000, maxSamples: Int = 2_000_000) {
        self.lookback = lookback
        self.maxSeries = maxSeries
        self.maxPoints = maxPoints
        self.maxSamples = maxSamples
    }

    public struct Failure: Error, Sendable, CustomStringConvertible, Equatable {
        public var description: String
        /// The query asked for what cannot be answered as asked (400 `bad_data`), rather than
        /// failing at work (422 `execution`).
        public var badData: Bool
        public init(_ d: String, badData: Bool = false) {
            description = d
            self.badData = badData
        }
    }

    public func evaluate(_ expr: Expr, start: Int64, end: Int64, step: Int64, source: some SeriesSource) throws -> QueryValue {
        guard end >= start else { throw Failure("end timestamp must not be before start time") }
        guard step > 0 || start == end else { throw Failure("zero or negative query resolution step widths are not accepted. Try a positive integer") }
        let steps = start == end ? 1 : (end - start) / step + 1
        guard steps <= Int64(maxPoints) else {
            throw Failure("exceeded maximum resolution of \(maxPoints) points per timeseries. Try decreasing the query resolution (?step=XX)", badData: true)
        }
        let times = (0..<steps).map { start + $0 * max(step, 1) }
        var budget = maxSamples
        return try eval(expr, times: times, step: step, source: source, budget: &budget)
    }

    /// As Prometheus: one series per label set (two could be left once a function drops __name__,
    /// or when two metric-name splits name the same series).
    static func unique(_ series: [Series]) throws -> QueryValue {
        var seen: Set<[String: String]> = []
        for s in series where !seen.insert(s.labels).inserted {
            throw Failure("vector cannot contain metrics with the same labelset")
        }
        return .vector(series)
    }

    func eval(_ expr: Expr, times: [Int64], step: Int64, source: some SeriesSource, budget: inout Int) throws -> QueryValue {
        switch expr {
        case .number(let v):
            return .scalar(times.map { Sample($0, v) })
        case .range:
            throw Failure("a range vector is only supported inside a range function")
        case .selector(let sel):
            let series = try read(sel, from: times[0] - lookback + 1, to: times[times.count - 1], source: source, budget: &budget)
            return try Self.unique(series.compactMap { s in
                var points: [Sample] = []
                var j = 0
                for t in times {
                    // The newest sample at or before t.
                    while j < s.samples.count, s.samples[j].t <= t { j += 1 }
                    if j > 0, s.samples[j - 1].t > t - lookback { points.append(Sample(t, s.samples[j - 1].v)) }
                }
                return points.isEmpty ? nil : Series(labels: s.labels, samples: points)
            })
        case .rangeFunction(let f, let sel, let range):
            if f != .rate, f != .increase, range == step, times.count > 1,
               let windows = try source.windows(sel, function: f, start: times[0], end: times[times.count - 1], step: step) {
                guard windows.count <= maxSeries else { throw tooManySeries() }
                return try Self.unique(windows.filter { !$0.samples.isEmpty }.map { Series(labels: f == .lastOverTime ? $0.labels : Self.droppingName($0.labels), samples: $0.samples) })
            }
            let series = try read(sel, from: times[0] - range + 1, to: times[times.count - 1], source: source, budget: &budget)
            return try Self.unique(series.compactMap { s in
                var points: [Sample] = []
                var lo = 0, hi = 0
                for t in times {
                    // The window (t - range, t]: samples[lo..<hi].
                    while hi < s.samples.count, s.samples[hi].t <= t { hi += 1 }
                    while lo < hi, s.samples[lo].t <= t - range { lo += 1 }
                    if let v = Self.apply(f, s.samples[lo..<hi], windowStart: t - range, windowEnd: t) { points.append(Sample(t, v)) }
                }
                return points.isEmpty ? nil : Series(labels: f == .lastOverTime ? s.labels : Self.droppingName(s.labels), samples: points)
            })
        case .aggregation(let op, let by, let inner):
            guard case .vector(let series) = try eval(inner, times: times, step: step, source: source, budget: &budget) else {
                throw Failure("\(op.rawValue) takes a vector")
            }
            return .vector(Self.aggregate(op, by: by, series))
        }
    }

    func tooManySeries() -> Failure {
        Failure("the query selects more than \(maxSeries) series (max_series); narrow it with label matchers")
    }

    func read(_ sel: Selector, from: Int64, to: Int64, source: some SeriesSource, budget: inout Int) throws -> [Series] {
        let series = try source.samples(sel, from: from, to: to)
        guard series.count <= maxSeries else { throw tooManySeries() }
        budget -= series.reduce(0) { $0 + $1.samples.count }
        guard budget >= 0 else {
            throw Failure("the query reads more than \(maxSamples) samples; shorten the range or narrow the selector")
        }
        return series
    }

    static func droppingName(_ labels: [String: String]) -> [String: String] {
        var l = labels
        l["__name__"] = nil
        return l
    }

    /// A range function over one window's samples; nil when it has no value there.
    static func apply(_ f: RangeFunction, _ w: ArraySlice<Sample>, windowStart: Int64, windowEnd: Int64) -> Double? {
        guard let first = w.first, let last = w.last else { return nil }
        switch f {
        case .avgOverTime:
            // Prometheus's running mean (Kahan-free): the sum over the count.
            return w.reduce(0.0) { $0 + $1.v } / Double(w.count)
        case .minOverTime: return w.reduce(Double.infinity) { $1.v.isNaN ? $0 : min($0, $1.v) }.nonInfinite(orNaNIfAll: w)
        case .maxOverTime: return w.reduce(-Double.infinity) { $1.v.isNaN ? $0 : max($0, $1.v) }.nonInfinite(orNaNIfAll: w)
        case .sumOverTime: return w.reduce(0.0) { $0 + $1.v }
        case .countOverTime: return Double(w.count)
        case .lastOverTime: return last.v
        case .rate, .increase:
            guard w.count >= 2 else { return nil }
            // Prometheus 3's extrapolatedRate (counter semantics): the increase over the samples
            // (counter resets added back), extrapolated to the window's edges when the first and
            // last samples are within 1.1 average intervals of them, else by half an interval; at
            // the start never past the counter's zero point.
            var result = last.v - first.v
            var previous = first.v
            for s in w.dropFirst() {
                if s.v < previous { result += previous }
                previous = s.v
            }
            let rangeSeconds = Double(windowEnd - windowStart) / 1000
            var durationToStart = Double(first.t - windowStart) / 1000
            var durationToEnd = Double(windowEnd - last.t) / 1000
            let sampled = Double(last.t - first.t) / 1000
            let averageBetween = sampled / Double(w.count - 1)
            let threshold = averageBetween * 1.1
            if durationToStart >= threshold { durationToStart = averageBetween / 2 }
            if result > 0, first.v >= 0 {
                let durationToZero = sampled * (first.v / result)
                if durationToZero < durationToStart { durationToStart = durationToZero }
            }
            if durationToEnd >= threshold { durationToEnd = averageBetween / 2 }
            result *= (sampled + durationToStart + durationToEnd) / sampled
            return f == .rate ? result / rangeSeconds : result
        }
    }

    /// `op by (labels)` at each time: series grouped by the labels `by` names (all dropped without
    /// `by`), one output series per group with a point where any member has one.
    static func aggregate(_ op: AggregationOp, by: [String]?, _ series: [Series]) -> [Series] {
        var groups: [[String: String]: [Int64: (sum: Double, count: Int, min: Double, max: Double)]] = [:]
        for s in series {
            var key: [String: String] = [:]
            for name in by ?? [] { if let v = s.labels[name] { key[name] = v } }
            var points = groups[key] ?? [:]
            for p in s.samples {
                if var a = points[p.t] {
                    a.sum += p.v
                    a.count += 1
                    a.min = p.v.isNaN ? a.min : (a.min.isNaN ? p.v : min(a.min, p.v))
                    a.max = p.v.isNaN ? a.max : (a.max.isNaN ? p.v : max(a.max, p.v))
                    points[p.t] = a
                } else {
                    points[p.t] = (p.v, 1, p.v, p.v)
                }
            }
            groups[key] = points
        }
        return groups.map { labels, points in
            let samples = points.keys.sorted().map { t -> Sample in
                let a = points[t]!
                let v: Double = switch op {
                case .sum: a.sum
                case .avg: a.sum / Double(a.count)
                case .min: a.min
                case .max: a.max
                case .count: Double(a.count)
                }
                return Sample(t, v)
            }
            return Series(labels: labels, samples: samples)
        }
        .sorted { $0.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.lexicographicallyPrecedes($1.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }) }
    }
}

extension Double {
    /// min/max over a window: ±infinity from the fold means every value was NaN, so NaN.
    fileprivate func nonInfinite(orNaNIfAll w: ArraySlice<Sample>) -> Double {
        w.allSatisfy { $0.v.isNaN } ? .nan : self
    }
}

import SpillwayPromQL
import RedisSink
import SpillwayConfig
import SpillwayCore

/// One series: a RedisTimeSeries series (one field of one tag set), or, in a stream, the entries
/// of one tag set, one field of them.
public struct SeriesInfo: Sendable, Hashable {
    /// Where it is read: the series' key (timeseries) or the stream's key (streams; the series of a
    /// stream share it).
    public var key: String
    public var labels: Labels

    public init(key: String, labels: Labels) {
        self.key = key
        self.labels = labels
    }

    public var name: String? { labels["name"] }
    public var field: String? { labels["field"] }

    /// Sorted by name, field, the other labels (by key), then key.
    static func ordered(_ a: SeriesInfo, _ b: SeriesInfo) -> Bool {
        func sortKey(_ s: SeriesInfo) -> [String] {
            [s.labels["name"] ?? "", s.labels["field"] ?? ""]
                + s.labels.filter { $0.key != "name" && $0.key != "field" }.sorted { $0.key < $1.key }.flatMap { [$0.key, $0.value] }
        }
        let ka = sortKey(a), kb = sortKey(b)
        if ka != kb { return ka.lexicographicallyPrecedes(kb) }
        return a.key < b.key
    }
}

/// A value as stored: RedisTimeSeries holds numbers; a stream entry's field may be text (a log
/// line's `message`).
public enum SampleValue: Sendable, Hashable {
    case number(Double)
    case text(String)

    /// A stream field's value: a number when it is a finite decimal number (as the agent writes
    /// integers and floats, and as `spillway aggregate` counts them), else text.
    static func parse(_ s: String) -> SampleValue {
        if let d = finiteDecimal(s.utf8) { return .number(d) }
        return .text(s)
    }
}

/// A number as Redis writes them (`0.5`, `3`, `1e-05`, `nan`, `inf`, `-inf`).
func parseNumber(_ s: String) -> Double? {
    guard !s.isEmpty, s.utf8.count < 64 else { return nil }
    if let d = Double(s) { return d }
    switch s.lowercased() {
    case "nan", "-nan": return .nan
    case "inf", "+inf", "infinity": return .infinity
    case "-inf", "-infinity": return -.infinity
    default: return nil
    }
}

/// The newest sample of a series.
public struct LatestSample: Sendable, Hashable {
    public var series: SeriesInfo
    /// Milliseconds since the epoch.
    public var timestamp: Int64
    public var value: SampleValue
}

/// One aggregated bucket: its start (ms) and value.
public struct Point: Sendable, Hashable {
    public var timestamp: Int64
    public var value: Double

    public init(timestamp: Int64, value: Double) {
        self.timestamp = timestamp
        self.value = value
    }
}

/// The points of one series over a range, and what they were read from.
public struct RangeSeries: Sendable {
    public var series: SeriesInfo
    /// The rollup the points come from (`max_1m`), nil when from the raw series (or the stream).
    public var rollup: String?
    /// The key read: the series', its rollup's (`…:max_1m`), or the stream's.
    public var sourceKey: String
    /// One per bucket that holds samples, in time order (buckets without samples are left out).
    public var points: [Point]
    /// Over streams with aggregates: the points before this time come from the aggregates
    /// (`rollup` names them, `sourceKey` their keys), those from it on from the stream.
    public var streamFrom: Int64?

    public init(series: SeriesInfo, rollup: String?, sourceKey: String, points: [Point], streamFrom: Int64? = nil) {
        self.series = series
        self.rollup = rollup
        self.sourceKey = sourceKey
        self.points = points
        self.streamFrom = streamFrom
    }
}

/// A range query: the series `selector` picks, aggregated with `aggregation` into buckets of
/// `step` ms, aligned to `alignment` (0: the epoch), from the bucket holding `from` to the bucket
/// holding `to` (both ms, inclusive; each bucket whole: `[start, start + step)`).
public struct RangeQuery: Sendable {
    public var selector: Selector
    public var from: Int64
    public var to: Int64
    public var step: Int64
    public var aggregation: Aggregation
    /// Buckets start at `alignment + k × step`. `spillway serve` uses 1, so that a bucket is
    /// Prometheus's window `(t - step, t]` in whole milliseconds. Rollups are aligned to the epoch:
    /// with another alignment the raw series is read.
    public var alignment: Int64

    public init(selector: Selector, from: Int64, to: Int64, step: Int64, aggregation: Aggregation, alignment: Int64 = 0) {
        self.selector = selector
        self.from = from
        self.to = to
        self.step = step
        self.aggregation = aggregation
        self.alignment = alignment
    }

    /// The first bucket's start.
    public var firstBucket: Int64 { alignment + floorDiv(from - alignment, step) * step }
    /// The last bucket's start.
    public var lastBucket: Int64 { alignment + floorDiv(to - alignment, step) * step }
    /// Buckets in the range: the most points a series can have.
    public var bucketCount: Int64 { (lastBucket - firstBucket) / step + 1 }
    /// The last millisecond the range reads.
    public var end: Int64 { lastBucket + step - 1 }
}

func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
    let q = a / b
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
}

public struct RangeResult: Sendable {
    public var query: RangeQuery
    public var series: [RangeSeries]
}

/// Why a query failed, as one line.
public enum QueryError: Error, Sendable, CustomStringConvertible {
    /// Redis could not be reached, timed out, or refused the credentials.
    case redis(RedisError)
    /// Redis answered a command with an error.
    case reply(command: String, message: String)
    /// A reply of a shape the reader does not know.
    case unexpected(command: String, what: String)
    /// Nothing matches the selector.
    case noSeries(Selector)
    /// More series than `max_series`.
    case tooManySeries(limit: Int)
    /// More points per series than `max_points`.
    case tooManyPoints(points: Int64, limit: Int)
    /// More raw samples than a query may read (`spillway serve`).
    case tooManySamples(limit: Int)
    /// A query that cannot be answered as asked (`from` after `to`, a step of 0).
    case invalid(String)

    public var description: String {
        switch self {
        case .redis(let e):
            return "cannot read from Redis: \(e)"
        case .reply(let command, let message):
            var line = "Redis refused \(command): \(message)"
            if command.hasPrefix("TS."), message.lowercased().contains("unknown command") {
                line += " (the RedisTimeSeries module is not loaded there; format = \"timeseries\" and the aggregates of spillway aggregate need it)"
            }
            return line
        case .unexpected(let command, let what):
            return "unexpected reply to \(command): \(what)"
        case .noSeries(let selector):
            return "no series matches \(selector)"
        case .tooManySeries(let limit):
            return "the query selects more than \(limit) series (max_series); narrow the selection or raise max_series"
        case .tooManyPoints(let points, let limit):
            return "the range holds \(points) points per series, more than \(limit) (max_points); use a larger step or a shorter range"
        case .tooManySamples(let limit):
            return "the query reads more than \(limit) samples; shorten the range or narrow the selector"
        case .invalid(let why):
            return why
        }
    }
}

/// Bounds on what one query may read and hold.
public struct QueryLimits: Sendable, Equatable {
    /// Series one query may select.
    public var maxSeries = 10_000
    /// Points (buckets) per series one range may return (Prometheus's own limit).
    public var maxPoints = 11_000
    /// Entries (or keys, or series) read per command: XRANGE/XREVRANGE COUNT, SCAN COUNT, and
    /// commands per pipeline.
    public var pageSize = 1000
    /// Streams: the tag sets of a stream are those of its entries no older than this before its
    /// newest entry (ms)…
    public var lookbackMs: Int64 = 300_000
    /// …and among its newest this many entries.
    public var lookbackEntries = 10_000

    public init() {}
}

/// Where the agent writes, as the read side needs it: the format, the stream key templates (the
/// output's and the inputs' own), the timeseries key templates (for listing series without an `=`
/// matcher) and the rollups.
public struct QueryLayout: Sendable {
    /// A key template, and the measurement name its keys hold when the template has no `{name}`
    /// (an input's own `key` with its `name_override`), else nil.
    public struct Template: Sendable, Equatable {
        public var template: KeyTemplate
        public var fixedName: String?

        public init(_ template: KeyTemplate, fixedName: String? = nil) {
            self.template = template
            self.fixedName = fixedName
        }
    }

    public var format: RedisOutputConfig.Format
    /// Inputs' own templates first (they are more specific), then the output's; no duplicates.
    public var templates: [Template]
    public var rollups: [RedisOutputConfig.Rollup]
    /// Over streams, the aggregates `spillway aggregate` writes (`[aggregate]`, when the
    /// configuration declares it): `range` reads the buckets they hold final from them.
    public var aggregates: AggregateConfig?

    public init(format: RedisOutputConfig.Format, templates: [Template], rollups: [RedisOutputConfig.Rollup]) {
        self.format = format
        var seen: [Template] = []
        for t in templates where !seen.contains(t) { seen.append(t) }
        self.templates = seen
        self.rollups = rollups
    }

    /// From `[outputs.redis]` and the inputs' own `key` templates (each with the name its records
    /// get when the template has no `{name}`: the input's `name_override`, or nil).
    public init(redis: RedisOutputConfig, inputKeys: [(key: KeyTemplate, name: String?)], aggregates: AggregateConfig? = nil) {
        let own = inputKeys.map { Template($0.key, fixedName: $0.key.parts.contains(.name) ? nil : $0.name) }
        self.init(format: redis.format, templates: own + [Template(redis.key)], rollups: redis.rollups)
        self.aggregates = redis.format == .stream ? aggregates : nil
    }
}

extension RedisConnectionOptions {
    /// The options `[outputs.redis]` gives (as the writer uses them).
    public init(_ redis: RedisOutputConfig) {
        self.init(endpoint: redis.endpoint)
        connectTimeout = redis.connectTimeout
        timeout = redis.timeout
        keepalive = redis.keepalive
        tls = redis.tls
    }
}

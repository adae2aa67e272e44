import SpillwayPromQL

/// The series `spillway serve` answers with: the engine's, named as Prometheus names them.
/// `__name__` is `NAME_FIELD` (the measurement and the field, `cpu_usage_user`), the other labels are
/// the record's tags (`host` among them); `name`, `field` and rollup series are not shown.
///
/// A selector's metric name is split at each `_` into a measurement and a field (`cpu_usage_user`:
/// `cpu` + `usage_user`, `cpu_usage` + `user`), and each split is asked for by its labels (so
/// Redis finds them, never a scan of everything); selectors without a metric name are asked for
/// by their other labels. The selector's matchers are then applied to the Prometheus labels.
///
/// Blocks (it reads Redis through its engine): one per request, on the HTTP server's threads.
public struct PrometheusSource: SeriesSource {
    let engine: QueryEngine
    let now: Int64
    let maxSamples: Int

    public init(engine: QueryEngine, now: Int64, maxSamples: Int) {
        self.engine = engine
        self.now = now
        self.maxSamples = maxSamples
    }

    /// The Prometheus labels of a series with the engine's labels: `NAME_FIELD`, or for a rollup
    /// or an aggregate of `spillway aggregate` `NAME_FIELD:ROLLUP` (`cpu_usage_user:avg_1h`, as
    /// Prometheus names recording rules' series), without the labels that say so.
    public static func prometheusLabels(_ labels: Labels) -> Labels? {
        guard let name = labels["name"], let field = labels["field"] else { return nil }
        var out = labels
        for l in ["name", "field", "rollup", "agg", "bucket", "bucket_ms", "spillway"] { out[l] = nil }
        out["__name__"] = name + "_" + field + (labels["rollup"].map { ":" + $0 } ?? "")
        // A tag named like one of those (diskio's device `name`) is `tag_name` below: here, where
        // the measurement and field are in `__name__`, it is `name` again (as Telegraf shows it).
        for l in ["name", "field", "rollup", "agg", "bucket", "bucket_ms", "spillway"] {
            if let v = out.removeValue(forKey: "tag_" + l) { out[l] = v }
        }
        return out
    }

    /// What to ask the engine for: a selector per split of the metric name, with the matchers on
    /// the record's tags (those mean the same to the engine).
    static func engineSelectors(_ s: Selector) throws -> [Selector] {
        var tags = s.matchers.filter { !["__name__", "name", "field", "rollup", "agg", "bucket", "bucket_ms", "spillway"].contains($0.label) }
        guard var metric = s.metricName else { return [Selector(tags)] }
        // `NAME_FIELD:ROLLUP`: that rollup (or aggregate) of NAME_FIELD.
        if let colon = metric.firstIndex(of: ":") {
            tags.append(try LabelMatcher("rollup", .equal, String(metric[metric.index(after: colon)...])))
            metric = String(metric[..<colon])
        }
        var out: [Selector] = []
        var i = metric.startIndex
        while let cut = metric[i...].firstIndex(of: "_") {
            let name = String(metric[..<cut]), field = String(metric[metric.index(after: cut)...])
            if !name.isEmpty, !field.isEmpty { out.append(Selector(name: name, field: field, tags)) }
            i = metric.index(after: cut)
        }
        // Each split is a look-up in Redis: a name of more parts is refused, not scanned for.
        guard out.count <= maxSplits else {
            throw Evaluator.Failure("the metric name \(metric) has more than \(maxSplits + 1) parts separated by _; no measurement and field make it", badData: true)
        }
        return out
    }

    static let maxSplits = 12

    func failure(_ e: QueryError) -> any Error {
        if case .redis = e { return PrometheusAPI.Unavailable(e.description) }
        return Evaluator.Failure(e.description)
    }

    /// The engine's answers for each of `selector`'s engine selectors, `.noSeries` being none.
    func each<T>(_ selector: Selector, _ body: (Selector) throws(QueryError) -> [T]) throws -> [T] {
        var out: [T] = []
        for s in try Self.engineSelectors(selector) {
            do {
                out += try body(s)
            } catch .noSeries {
                continue
            } catch {
                throw failure(error)
            }
        }
        return out
    }

    public func samples(_ selector: Selector, from: Int64, to: Int64) throws -> [Series] {
        // One budget for every split: each is read with what the ones before it left.
        var left = maxSamples
        var out: [Series] = []
        _ = try each(selector) { (s: Selector) throws(QueryError) -> [Int] in
            for (info, samples) in try engine.samples(s, from: from, to: to, maxSamples: left) {
                left -= samples.count
                guard let labels = Self.prometheusLabels(info.labels), selector.matches(labels) else { continue }
                out.append(Series(labels: labels, samples: samples.map { Sample($0.0, $0.1) }))
            }
            return []
        }
        return out
    }

    public func windows(_ selector: Selector, function: RangeFunction, start: Int64, end: Int64, step: Int64) throws -> [Series]? {
        guard step > 0 else { return nil }
        let aggregation: Aggregation
        switch function {
        case .avgOverTime: aggregation = .avg
        case .minOverTime: aggregation = .min
        case .maxOverTime: aggregation = .max
        case .sumOverTime: aggregation = .sum
        case .countOverTime: aggregation = .count
        case .lastOverTime: aggregation = .last
        case .rate, .increase: return nil
        }
        var out: [Series] = []
        let ranges = try each(selector) { (s: Selector) throws(QueryError) in
            // Buckets [t - step + 1, t + 1) for t = start, start + step, …: the windows (t - step, t].
            let alignment = ((start + 1) % step + step) % step
            return try engine.range(RangeQuery(selector: s, from: start - step + 1, to: end, step: step, aggregation: aggregation, alignment: alignment),
                                    now: now).series
        }
        for r in ranges {
            guard let labels = Self.prometheusLabels(r.series.labels), selector.matches(labels) else { continue }
            out.append(Series(labels: labels, samples: r.points.map { Sample($0.timestamp + step - 1, $0.value) }))
        }
        return out
    }

    /// Whether a series whose newest sample is `latest` is listed for a window from `from`: its
    /// newest sample is no older than the 5-minute lookback before `from` (a query charts it from
    /// there). An aggregate's sample is stamped at its bucket's start and written once the bucket
    /// closed (its end plus the grace), so its bucket counts as twice its length.
    static func listed(_ latest: LatestSample, from: Int64) -> Bool {
        let bucket = latest.series.labels["bucket_ms"].flatMap { Int64($0) } ?? 0
        return latest.timestamp + 2 * bucket >= from - Evaluator.defaultLookback
    }

    /// The series that exist now (RedisTimeSeries: those in its index; streams: those among each
    /// stream's newest entries, see `QueryLimits.lookbackMs`) that a query from `from` can chart
    /// (`listed`): so a host gone before the window is not offered; `to` is not used.
    public func labelSets(_ selectors: [Selector], from: Int64, to: Int64) throws -> [[String: String]] {
        var seen: Set<Labels> = []
        var out: [Labels] = []
        // Without a selector, the aggregates `spillway aggregate` wrote are listed too (when the
        // Redis has RedisTimeSeries; else there are none).
        if selectors.isEmpty, engine.layout.format == .stream {
            do throws(QueryError) {
                let aggregates = Selector([try! LabelMatcher("spillway", .equal, "aggregate"), try! LabelMatcher("rollup", .notEqual, "")])
                for latest in try engine.latest(aggregates) {
                    guard Self.listed(latest, from: from), let labels = Self.prometheusLabels(latest.series.labels), seen.insert(labels).inserted else { continue }
                    out.append(labels)
                }
            } catch .noSeries {
            } catch .reply(_, let message) where message.lowercased().contains("unknown command") {
            } catch .tooManySeries {
                // More than max_series aggregates: not listed (each is still read by its name).
            } catch {
                throw failure(error)
            }
        }
        for selector in selectors.isEmpty ? [Selector()] : selectors {
            // Through the newest samples: a stream field holding text (a log line's message) is
            // not a series Prometheus could chart, and is not listed.
            for latest in try each(selector, { (s: Selector) throws(QueryError) in try engine.latest(s) }) {
                guard case .number = latest.value, Self.listed(latest, from: from), let labels = Self.prometheusLabels(latest.series.labels), selector.matches(labels),
                      seen.insert(labels).inserted else { continue }
                out.append(labels)
            }
        }
        return out.sorted { $0.sorted { $0.key < $1.key }.map { $0.key + "\u{1}" + $0.value }.lexicographicallyPrecedes($1.sorted { $0.key < $1.key }.map { $0.key + "\u{1}" + $0.value }) }
    }
}

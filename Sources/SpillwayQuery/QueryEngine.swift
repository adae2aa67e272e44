import SpillwayPromQL
import RedisSink
import SpillwayBatch
import SpillwayConfig
import SpillwayCore

/// Reads back what the agent wrote: the series a selector picks, their newest values, and their
/// values over a range aggregated into buckets. Over one `RedisConnection` (RedisSink's: the same
/// TCP, unix socket, TLS, AUTH and SELECT as the writer), so it blocks: use it from one thread at a
/// time, never from Swift's cooperative pool (a server answers each request on a thread of its own,
/// with an engine of its own, or hands engines out from a pool).
///
/// Every read is bounded: keys are found with SCAN (COUNT `pageSize`) or the RedisTimeSeries index,
/// stream entries are read in pages of `pageSize`, commands go in pipelines of `pageSize`, and a
/// query selecting more than `maxSeries` series, or a range of more than `maxPoints` buckets, fails
/// with an error saying so before it reads more.
public final class QueryEngine {
    public let layout: QueryLayout
    public let limits: QueryLimits
    let connection: RedisConnection

    public init(connection: RedisConnection, layout: QueryLayout, limits: QueryLimits = QueryLimits()) {
        self.connection = connection
        self.layout = layout
        self.limits = limits
    }

    /// A connection of its own to the Redis `[outputs.redis]` names.
    public convenience init(redis: RedisOutputConfig, layout: QueryLayout, limits: QueryLimits = QueryLimits()) {
        self.init(connection: RedisConnection(options: RedisConnectionOptions(redis)), layout: layout, limits: limits)
    }

    /// The series `selector` picks, with their labels, sorted by name, field, then the other labels.
    /// Throws `.noSeries` when there is none.
    public func series(_ selector: Selector) throws(QueryError) -> [SeriesInfo] {
        let found: [SeriesInfo]
        switch format(for: selector) {
        case .timeseries: found = try timeseriesFind(selector, withLatest: false).map(\.series)
        case .stream: found = try streamLatest(selector).map(\.series)
        }
        guard !found.isEmpty else { throw .noSeries(selector) }
        return found.sorted(by: SeriesInfo.ordered)
    }

    /// The newest sample of each series `selector` picks (timeseries: TS.MGET LATEST, so a rollup's
    /// open bucket counts; streams: the newest entry of each tag set, see `QueryLimits.lookbackMs`).
    /// Series without a sample are left out. Throws `.noSeries` when no series matches.
    public func latest(_ selector: Selector) throws(QueryError) -> [LatestSample] {
        var out: [LatestSample] = []
        switch format(for: selector) {
        case .timeseries:
            let found = try timeseriesFind(selector, withLatest: true)
            guard !found.isEmpty else { throw .noSeries(selector) }
            for f in found {
                if let (t, v) = f.latest { out.append(LatestSample(series: f.series, timestamp: t, value: .number(v))) }
            }
        case .stream:
            out = try streamLatest(selector)
            guard !out.isEmpty else { throw .noSeries(selector) }
        }
        return out.sorted { SeriesInfo.ordered($0.series, $1.series) }
    }

    /// Where the series `selector` picks are: the layout's format, except that a selector naming
    /// `rollup` (`rollup=avg_1h`) over streams picks the aggregates `spillway aggregate` wrote,
    /// RedisTimeSeries series that carry the `rollup` label as rollups do.
    func format(for selector: Selector) -> RedisOutputConfig.Format {
        // (`rollup=`, which selects series without one, is the streams.)
        layout.format == .stream && selector.matchers.contains { $0.label == "rollup" && !$0.matches(nil) } ? .timeseries : layout.format
    }

    /// The rollup a timeseries range reads: among `[outputs.redis] rollups` of the query's
    /// aggregation, the coarsest whose bucket is at most the step and divides it (so each step holds
    /// whole rollup buckets) and whose retention covers the range (0: forever; else the range's
    /// first bucket is no older than `now` minus the retention). Nil: the raw series. Never a
    /// rollup when the selector itself names `rollup`.
    public func rollup(for query: RangeQuery, now: Int64) -> RedisOutputConfig.Rollup? {
        guard layout.format == .timeseries, query.alignment == 0, !query.selector.mentions("rollup") else { return nil }
        return layout.rollups
            .filter { r in
                r.aggregation == query.aggregation.rollupSource && r.bucketMs <= query.step && query.step % r.bucketMs == 0
                    && (r.retentionMs == 0 || query.firstBucket >= now - r.retentionMs)
            }
            .max { $0.bucketMs < $1.bucketMs }
    }

    /// The series `query.selector` picks, aggregated into `query.step` buckets. Timeseries: one
    /// TS.RANGE … AGGREGATION per series (pipelined), on the chosen rollup (`rollup(for:now:)`; a
    /// series without that rollup is read raw) or the raw series. Streams: XRANGE in pages, each
    /// numeric field of each entry added to its series' bucket here. Throws `.noSeries` when no
    /// series matches at all (a series with no sample in the range is left out of the result).
    public func range(_ query: RangeQuery, now: Int64) throws(QueryError) -> RangeResult {
        guard query.step > 0 else { throw .invalid("the step must be at least 1ms") }
        guard query.from <= query.to else {
            throw .invalid("the range starts (\(QueryTime.format(query.from))) after it ends (\(QueryTime.format(query.to)))")
        }
        guard query.bucketCount <= Int64(limits.maxPoints) else { throw .tooManyPoints(points: query.bucketCount, limit: limits.maxPoints) }
        let series: [RangeSeries]
        switch format(for: query.selector) {
        case .timeseries: series = try timeseriesRange(query, now: now)
        case .stream:
            let buckets = aggregateBuckets(for: query, now: now)
            series = try buckets.isEmpty ? streamRange(query) : streamRange(query, aggregates: buckets)
        }
        return RangeResult(query: query, series: series.sorted { SeriesInfo.ordered($0.series, $1.series) })
    }

    // MARK: - Redis

    /// Sends `commands` in pipelines of `pageSize` and returns every reply (error replies among
    /// them); throws when Redis cannot be reached.
    func run(_ commands: [[String]]) throws(QueryError) -> [RedisReply] {
        var replies: [RedisReply] = []
        replies.reserveCapacity(commands.count)
        var start = 0
        while start < commands.count {
            let chunk = commands[start..<min(commands.count, start + max(1, limits.pageSize))]
            let (r, error) = connection.pipeline(chunk.map { RedisCommand($0) })
            if let error { throw .redis(error) }
            replies += r
            start += chunk.count
        }
        return replies
    }

    /// One command; an error reply throws.
    func one(_ args: [String]) throws(QueryError) -> RedisReply {
        let reply = try run([args])[0]
        if case .error(let message) = reply { throw .reply(command: args[0], message: message) }
        return reply
    }

    /// Every key SCAN finds for `pattern` of `type`, in the order found; throws `.tooManySeries`
    /// past `limit` keys.
    func scan(_ pattern: String, type: String, limit: Int, into keys: inout [String], seen: inout Set<String>,
              keep: (String) -> Bool = { _ in true }) throws(QueryError) {
        var cursor = "0"
        repeat {
            let reply = try one(["SCAN", cursor, "MATCH", pattern, "COUNT", String(limits.pageSize), "TYPE", type])
            guard let parts = reply.array, parts.count == 2, let next = parts[0].string, let found = parts[1].array else {
                throw .unexpected(command: "SCAN", what: "not [cursor, keys]")
            }
            for k in found {
                guard let key = k.string, keep(key), seen.insert(key).inserted else { continue }
                keys.append(key)
                if keys.count > limit { throw .tooManySeries(limit: limits.maxSeries) }
            }
            cursor = next
        } while cursor != "0"
    }

    // MARK: - RedisTimeSeries

    struct Found {
        var series: SeriesInfo
        var latest: (Int64, Double)?
    }

    /// The series `selector` picks. With an `=` matcher RedisTimeSeries can apply, from its index:
    /// TS.QUERYINDEX (the count first: past `maxSeries` the query fails before labels are read,
    /// when every matcher was applied by Redis), then TS.MGET LATEST WITHLABELS for the labels and
    /// newest samples; the matchers Redis cannot apply (regular expressions) are applied to the
    /// labels read back. Without one (RedisTimeSeries needs one), SCAN over the key templates'
    /// patterns (TYPE TSDB-TYPE; more than `maxSeries` keys fails), then TS.INFO for each key's
    /// labels and TS.GET LATEST for its newest sample. Rollup series are left out unless the
    /// selector names `rollup`.
    func timeseriesFind(_ selector: Selector, withLatest: Bool) throws(QueryError) -> [Found] {
        var filters: [String] = []
        var complete = true
        for m in selector.matchers {
            if let f = m.timeSeriesFilter { filters.append(f) } else { complete = false }
        }
        let wantRollups = selector.mentions("rollup")
        if !wantRollups { filters.append("rollup=") }
        let positive = selector.matchers.contains { $0.op == .equal && !$0.value.isEmpty && $0.timeSeriesFilter != nil }
        var out: [Found] = []
        if positive {
            guard let keys = try one(["TS.QUERYINDEX"] + filters).array else {
                throw .unexpected(command: "TS.QUERYINDEX", what: "not an array of keys")
            }
            if keys.isEmpty { return [] }
            if complete, keys.count > limits.maxSeries { throw .tooManySeries(limit: limits.maxSeries) }
            guard let rows = try one(["TS.MGET", "LATEST", "WITHLABELS", "FILTER"] + filters).array else {
                throw .unexpected(command: "TS.MGET", what: "not an array")
            }
            for row in rows {
                guard let r = row.array, r.count == 3, let key = r[0].string, let labelPairs = r[1].array else {
                    throw .unexpected(command: "TS.MGET", what: "a series is not [key, labels, sample]")
                }
                let labels = try Self.labels(labelPairs, command: "TS.MGET")
                guard selector.matches(labels) else { continue }
                out.append(Found(series: SeriesInfo(key: key, labels: labels), latest: try Self.sample(r[2], command: "TS.MGET")))
                if out.count > limits.maxSeries { throw .tooManySeries(limit: limits.maxSeries) }
            }
            return out
        }
        // No `=` matcher: every series key the templates can make.
        let rollupSuffixes = layout.rollups.map { ":\($0.aggregation)_\($0.bucketText)" }
        var keys: [String] = []
        var seen: Set<String> = []
        for t in layout.templates {
            try scan(t.template.scanPattern(selector, suffix: "*"), type: "TSDB-TYPE", limit: limits.maxSeries, into: &keys, seen: &seen) { key in
                wantRollups || !rollupSuffixes.contains { key.hasSuffix($0) }
            }
        }
        let infos = try run(keys.map { ["TS.INFO", $0] })
        var picked: [SeriesInfo] = []
        for (key, reply) in zip(keys, infos) {
            // A key deleted since the SCAN: not a series any more.
            if case .error = reply { continue }
            guard let fields = reply.array else { throw .unexpected(command: "TS.INFO", what: "not an array") }
            var labels: Labels = [:]
            var i = 0
            while i + 1 < fields.count {
                if fields[i].string == "labels", let pairs = fields[i + 1].array {
                    labels = try Self.labels(pairs, command: "TS.INFO")
                }
                i += 2
            }
            if !wantRollups, labels["rollup"] != nil { continue }
            guard selector.matches(labels) else { continue }
            picked.append(SeriesInfo(key: key, labels: labels))
        }
        guard withLatest else { return picked.map { Found(series: $0, latest: nil) } }
        let samples = try run(picked.map { ["TS.GET", $0.key, "LATEST"] })
        for (s, reply) in zip(picked, samples) {
            if case .error = reply { continue }
            out.append(Found(series: s, latest: try Self.sample(reply, command: "TS.GET")))
        }
        return out
    }

    /// `[[label, value], …]` as labels.
    static func labels(_ pairs: [RedisReply], command: String) throws(QueryError) -> Labels {
        var labels: Labels = [:]
        for p in pairs {
            guard let kv = p.array, kv.count == 2, let k = kv[0].string else { throw .unexpected(command: command, what: "a label is not [name, value]") }
            labels[k] = kv[1].string ?? ""
        }
        return labels
    }

    /// `[timestamp, value]`, or nil for `[]` (a series without samples).
    static func sample(_ reply: RedisReply, command: String) throws(QueryError) -> (Int64, Double)? {
        if case .null = reply { return nil }
        guard let s = reply.array else { throw .unexpected(command: command, what: "a sample is not an array") }
        if s.isEmpty { return nil }
        guard s.count == 2, let t = s[0].string.flatMap({ Int64($0) }), let v = s[1].string.flatMap(parseNumber) else {
            throw .unexpected(command: command, what: "a sample is not [timestamp, value]")
        }
        return (t, v)
    }

    func timeseriesRange(_ query: RangeQuery, now: Int64) throws(QueryError) -> [RangeSeries] {
        let found = try timeseriesFind(query.selector, withLatest: false)
        guard !found.isEmpty else { throw .noSeries(query.selector) }
        let rollup = rollup(for: query, now: now)
        let rollupName = rollup.map { "\($0.aggregation)_\($0.bucketText)" }
        let from = String(max(0, query.firstBucket)), to = String(query.end), step = String(query.step)
        func command(_ key: String, overRollup: Bool) -> [String] {
            // (Over a rollup of the same aggregation: counts add up, the others are taken again.)
            let aggregation = overRollup ? query.aggregation.overRollup : query.aggregation
            // LATEST: a rollup's newest bucket, still open, is computed from its raw samples.
            return ["TS.RANGE", key, from, to, "LATEST"] + (query.alignment == 0 ? [] : ["ALIGN", String(query.alignment)])
                + ["AGGREGATION", aggregation.rawValue, step]
        }
        let readsRollup = rollupName != nil
        let keys = found.map { f in rollupName.map { f.series.key + ":" + $0 } ?? f.series.key }
        // A series the selector picked by its rollup label (a rollup, or an aggregate of `spillway
        // aggregate`) of the query's aggregation is read as a rollup too: `--agg count` over
        // `count_1m` adds the counts up.
        let ofThisAggregation = found.map { $0.series.labels["rollup"]?.hasPrefix(query.aggregation.rawValue + "_") == true }
        var replies = try run(keys.indices.map { command(keys[$0], overRollup: readsRollup || ofThisAggregation[$0]) })
        var sources = keys
        // (A series picked by its rollup label is that rollup, or that aggregate.)
        var rollups: [String?] = found.map { f in rollupName ?? f.series.labels["rollup"].flatMap { $0.isEmpty ? nil : $0 } }
        // A series without the rollup (made before the rollup was configured): read raw.
        if readsRollup {
            let missing = replies.indices.filter { if case .error(let m) = replies[$0] { m.contains("does not exist") } else { false } }
            if !missing.isEmpty {
                let again = try run(missing.map { command(found[$0].series.key, overRollup: false) })
                for (i, r) in zip(missing, again) {
                    replies[i] = r
                    sources[i] = found[i].series.key
                    rollups[i] = nil
                }
            }
        }
        var out: [RangeSeries] = []
        for i in found.indices {
            if case .error(let message) = replies[i] { throw .reply(command: "TS.RANGE \(sources[i])", message: message) }
            guard let samples = replies[i].array else { throw .unexpected(command: "TS.RANGE", what: "not an array of samples") }
            var points: [Point] = []
            points.reserveCapacity(samples.count)
            for s in samples {
                if let (t, v) = try Self.sample(s, command: "TS.RANGE") { points.append(Point(timestamp: t, value: v)) }
            }
            out.append(RangeSeries(series: found[i].series, rollup: rollups[i], sourceKey: sources[i], points: points))
        }
        return out
    }

    // MARK: - Streams

    /// A stream entry: its ID, the ID's milliseconds, its time, its tags (`tag_KEY` fields) and its
    /// other fields (`timestamp` left out).
    struct Entry {
        var id: String
        var ms: Int64
        /// The record's time: its last `timestamp` field (the agent writes it last, after a record's
        /// own field of that name), else the ID's milliseconds; as `spillway aggregate` reads it.
        var time: Int64
        var tags: [(String, String)]
        var fields: [(String, String)]
    }

    static func entries(_ reply: RedisReply, command: String) throws(QueryError) -> [Entry] {
        guard let items = reply.array else { throw .unexpected(command: command, what: "not an array of entries") }
        var out: [Entry] = []
        out.reserveCapacity(items.count)
        for item in items {
            guard let e = item.array, e.count == 2, let id = e[0].string, let pairs = e[1].array,
                  let ms = Self.idMs(id) else {
                throw .unexpected(command: command, what: "an entry is not [id, fields]")
            }
            var entry = Entry(id: id, ms: ms, time: ms, tags: [], fields: [])
            var timestamp: String?
            var i = 0
            while i + 1 < pairs.count {
                if let k = pairs[i].string, let v = pairs[i + 1].string {
                    if k.hasPrefix("tag_") {
                        entry.tags.append((String(k.dropFirst(4)), v))
                    } else if k == "timestamp" {
                        timestamp = v
                    } else {
                        entry.fields.append((k, v))
                    }
                }
                i += 2
            }
            if let t = timestamp.flatMap({ Int64($0) }) { entry.time = t }
            out.append(entry)
        }
        return out
    }

    /// The stream keys the templates make that `selector` may pick, with the labels each key holds
    /// (its placeholders; `name` from a template without `{name}` that has a fixed name). A key is
    /// left out when a matcher on one of those labels fails (`name` always: entries never hold it).
    /// More than `maxSeries` keys fails (each stream holds a series at least).
    func streamKeys(_ selector: Selector) throws(QueryError) -> [(key: String, labels: Labels)] {
        var out: [(String, Labels)] = []
        var keys: [String] = []
        var seen: Set<String> = []
        for t in layout.templates {
            var found: [String] = []
            try scan(t.template.scanPattern(selector), type: "stream", limit: limits.maxSeries - keys.count, into: &found, seen: &seen) { key in
                guard var labels = t.template.labels(of: key) else { return false }
                if let name = t.fixedName { labels["name"] = name }
                return selector.matchers.allSatisfy { m in
                    m.label != "name" && labels[m.label] == nil ? true : m.matches(labels[m.label])
                }
            }
            for key in found {
                var labels = t.template.labels(of: key) ?? [:]
                if let name = t.fixedName { labels["name"] = name }
                out.append((key, labels))
            }
            keys += found
        }
        return out
    }

    /// A series' labels in a stream: the key's, the entry's tags over them, and the field. A tag
    /// named like one of the read side's labels (diskio's device `name`) is `tag_name`, as the
    /// timeseries writer labels it.
    static func entryLabels(_ keyLabels: Labels, _ e: Entry) -> Labels {
        var labels = keyLabels
        for (k, v) in e.tags { labels[k == "name" || k == "field" || k == "rollup" ? "tag_" + k : k] = v }
        return labels
    }

    /// The newest sample of each series in the streams `selector` picks: each stream is read from
    /// its newest entry backwards (XREVRANGE, pages of `pageSize`) while entries are no older than
    /// `lookbackMs` before the newest, for `lookbackEntries` entries at most; each tag set and field
    /// met there is a series, with the newest value found.
    func streamLatest(_ selector: Selector) throws(QueryError) -> [LatestSample] {
        var out: [LatestSample] = []
        for (key, keyLabels) in try streamKeys(selector) {
            var seen: Set<Labels> = []
            var newest: Int64?
            var start = "+"
            var scanned = 0
            reading: while true {
                let page = try Self.entries(try one(["XREVRANGE", key, start, "-", "COUNT", String(limits.pageSize)]), command: "XREVRANGE")
                for e in page {
                    if newest == nil { newest = e.ms }
                    if let n = newest, e.ms < n - limits.lookbackMs { break reading }
                    scanned += 1
                    let base = Self.entryLabels(keyLabels, e)
                    for (field, value) in e.fields {
                        var labels = base
                        labels["field"] = field
                        guard seen.insert(labels).inserted, selector.matches(labels) else { continue }
                        out.append(LatestSample(series: SeriesInfo(key: key, labels: labels), timestamp: e.ms, value: .parse(value)))
                        if out.count > limits.maxSeries { throw .tooManySeries(limit: limits.maxSeries) }
                    }
                }
                guard page.count == limits.pageSize, scanned < limits.lookbackEntries, let last = page.last else { break }
                start = "(" + last.id
            }
        }
        return out
    }

    func streamRange(_ query: RangeQuery) throws(QueryError) -> [RangeSeries] {
        var buckets: [[Int64: Accumulator]] = []
        let first = query.firstBucket, step = query.step
        let infos = try streamScan(query.selector, from: max(0, first), to: query.end) { (i: Int, ms: Int64, v: Double) throws(QueryError) in
            if i == buckets.count { buckets.append([:]) }
            buckets[i][first + floorDiv(ms - first, step) * step, default: Accumulator()].add(v)
        }
        // Nothing in the range: an error only when no series matches at all.
        if infos.isEmpty, try streamLatest(query.selector).isEmpty { throw .noSeries(query.selector) }
        return infos.indices.map { i in
            let points = buckets[i].keys.sorted().map { Point(timestamp: $0, value: buckets[i][$0]!.value(query.aggregation)) }
            return RangeSeries(series: infos[i], rollup: nil, sourceKey: infos[i].key, points: points)
        }
    }

    /// Every numeric field value in `[from, to]` (ms) of the streams `selector` picks, in each
    /// stream's order, handed to `add` with the index of its series (a tag set and field; series
    /// are numbered as they are first met) and its time; returns the series. XRANGE in pages of
    /// `pageSize`; more than `maxSeries` series fails.
    /// With `cut` (a range split with the aggregates, see AggregateCoverage.swift): read from the
    /// cut's ID, and only entries whose `timestamp` is at or after it are counted.
    func streamScan(_ selector: Selector, from: Int64, to: Int64, keys given: [(key: String, labels: Labels)]? = nil, cut: Int64? = nil,
                    _ add: (Int, Int64, Double) throws(QueryError) -> Void) throws(QueryError) -> [SeriesInfo] {
        let keys: [(key: String, labels: Labels)]
        if let given { keys = given } else { keys = try streamKeys(selector) }
        var index: [Labels: Int] = [:]
        var infos: [SeriesInfo] = []
        let end = String(to)
        for (key, keyLabels) in keys {
            // Per tag set met in this stream (its tags as one string) and field: the series' index,
            // or -1 when the selector leaves it out. An entry costs a string and two look-ups, not
            // a set of labels per field.
            var decided: [String: [String: Int]] = [:]
            var signature = ""
            let first = max(from, cut ?? from)
            if first > to { continue }
            var start = String(first)
            while true {
                let page = try Self.entries(try one(["XRANGE", key, start, end, "COUNT", String(limits.pageSize)]), command: "XRANGE")
                for e in page {
                    if let cut, e.time < cut { continue }
                    signature.removeAll(keepingCapacity: true)
                    for (k, v) in e.tags { signature += k; signature += "\u{1}"; signature += v; signature += "\u{2}" }
                    var fields = decided[signature] ?? [:]
                    var changed = false
                    for (field, value) in e.fields {
                        guard let v = finiteDecimal(value.utf8) else { continue }
                        let i: Int
                        if let known = fields[field] {
                            i = known
                        } else {
                            var labels = Self.entryLabels(keyLabels, e)
                            labels["field"] = field
                            if let existing = index[labels] {
                                i = existing
                            } else if selector.matches(labels) {
                                i = infos.count
                                index[labels] = i
                                infos.append(SeriesInfo(key: key, labels: labels))
                                if infos.count > limits.maxSeries { throw .tooManySeries(limit: limits.maxSeries) }
                            } else {
                                i = -1
                            }
                            fields[field] = i
                            changed = true
                        }
                        if i >= 0 { try add(i, e.ms, v) }
                    }
                    if changed { decided[signature] = fields }
                }
                guard page.count == limits.pageSize, let last = page.last else { break }
                start = "(" + last.id
            }
        }
        return infos
    }

    // MARK: - Raw samples

    /// The raw samples in `[from, to]` (ms) of each series `selector` picks (`spillway serve`
    /// evaluates PromQL over them): timeseries, one TS.RANGE per series (pipelined; rollups are
    /// not series here); streams, XRANGE in pages. Series without a sample there are left out, and
    /// no series at all is not an error. More than `maxSamples` samples in all fails (`.tooManySamples`).
    public func samples(_ selector: Selector, from: Int64, to: Int64, maxSamples: Int) throws(QueryError) -> [(series: SeriesInfo, samples: [(Int64, Double)])] {
        guard from <= to else { return [] }
        var total = 0
        switch format(for: selector) {
        case .timeseries:
            let found = try timeseriesFind(selector, withLatest: false)
            let window = [String(max(0, from)), String(to)]
            // First how many samples each series holds there (one number each: Redis counts), so a
            // query past the budget is refused before any sample is read.
            let counts = try run(found.map { ["TS.RANGE", $0.series.key] + window + ["AGGREGATION", "count", String(max(1, to - max(0, from) + 1))] })
            for (f, reply) in zip(found, counts) {
                if case .error(let message) = reply {
                    if message.contains("does not exist") { continue }
                    throw .reply(command: "TS.RANGE \(f.series.key)", message: message)
                }
                for item in reply.array ?? [] { total += Int(try Self.sample(item, command: "TS.RANGE")?.1 ?? 0) }
                if total > maxSamples { throw .tooManySamples(limit: maxSamples) }
            }
            total = 0
            let replies = try run(found.map { ["TS.RANGE", $0.series.key] + window + ["COUNT", String(maxSamples + 1)] })
            var out: [(series: SeriesInfo, samples: [(Int64, Double)])] = []
            for (f, reply) in zip(found, replies) {
                // A series deleted since it was found: nothing.
                if case .error(let message) = reply {
                    if message.contains("does not exist") { continue }
                    throw .reply(command: "TS.RANGE \(f.series.key)", message: message)
                }
                guard let items = reply.array else { throw .unexpected(command: "TS.RANGE", what: "not an array of samples") }
                total += items.count
                if total > maxSamples { throw .tooManySamples(limit: maxSamples) }
                var samples: [(Int64, Double)] = []
                samples.reserveCapacity(items.count)
                for item in items {
                    if let s = try Self.sample(item, command: "TS.RANGE") { samples.append(s) }
                }
                if !samples.isEmpty { out.append((f.series, samples)) }
            }
            return out
        case .stream:
            var samples: [[(Int64, Double)]] = []
            let infos = try streamScan(selector, from: max(0, from), to: to) { (i: Int, ms: Int64, v: Double) throws(QueryError) in
                if i == samples.count { samples.append([]) }
                total += 1
                if total > maxSamples { throw .tooManySamples(limit: maxSamples) }
                samples[i].append((ms, v))
            }
            return infos.indices.map { (infos[$0], samples[$0]) }
        }
    }
}

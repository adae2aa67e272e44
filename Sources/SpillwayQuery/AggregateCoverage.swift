import RedisSink
import SpillwayConfig
import SpillwayPromQL
import SpillwayCore
import SpillwayBatch

/// `range` over streams, when `[aggregate]` is declared: the steps `spillway aggregate` holds final
/// are read from its RedisTimeSeries series (as a timeseries range reads a rollup), the later ones
/// from the streams, so a long range costs a few samples per step instead of every entry, and a
/// stream trimmed since still answers from its aggregates.
///
/// **Nothing is counted twice, whatever the timing.** The range splits at one time, the cut (a
/// step boundary): the aggregates are read for the steps before it, and from the streams only
/// entries whose `timestamp` field is at or after it are counted. The worker buckets an entry by
/// that same field, so an entry is in an aggregate step or counted from the stream, never both,
/// even when its ID is not its time (`ids = "auto"`, a raised ID, a record given a new ID after an
/// OOM refusal). The streams are read from the cut's ID: an entry's ID is at or after its time
/// (the minter only ever raises an ID; Redis's clock under `ids = "auto"`), so none at or after the
/// cut is missed unless the host's clock is ahead of Redis's.
///
/// **Where the cut is: where the aggregates stop being final.** For the query's bucket length:
/// - every stream the selector picks is read by the group (else no aggregates at all), and the
///   cut is before the bucket holding the oldest entry the group has not acknowledged (its last
///   delivered ID and its oldest pending entry, whichever is older) less `grace`, so an entry not
///   yet read whose time is up to `grace` before its ID still counts from the stream;
/// - and before every bucket of those streams whose figures wait in the due set (read with
///   ZSCAN: a member there from the scan's start to its end is seen);
/// - and aggregates are read only from the time the group buckets at that length
///   (`…:since:LENGTH`, see the worker's `Scripts.markBuckets`: 0 when the group's first worker
///   created every group, as it reads every stream from its start; else when the first worker
///   with that length started, moved on by each commit and each bucket write of a worker
///   still running without it),
///   else a shorter length is tried.
/// Two aggregate series with the same labels, or two stream series told apart only by a tag with
/// an empty value (the aggregates leave those out): the streams alone.
/// An entry acknowledged after the cut was read whose time is before the cut (more than `grace`
/// late) is counted by neither part until the worker has written its bucket again: late data
/// shows late, it is never doubled.
extension QueryEngine {
    /// The aggregate bucket lengths a stream range may read, longest first: among `[aggregate]
    /// buckets`, those that divide the step and whose retention covers the range (as a rollup is
    /// chosen). Empty: the streams alone (no `[aggregate]`, `last`, a selector naming `rollup`,
    /// buckets not on the epoch, a selector without an `=` name and field).
    func aggregateBuckets(for query: RangeQuery, now: Int64) -> [AggregateConfig.Bucket] {
        guard let a = layout.aggregates, query.alignment == 0, query.aggregation != .last, !query.selector.mentions("rollup"),
              query.selector.equality("name") != nil, query.selector.equality("field") != nil else { return [] }
        return a.buckets
            .filter { b in
                b.ms > 0 && b.ms <= query.step && query.step % b.ms == 0 && (b.retentionMs == 0 || query.firstBucket >= now - b.retentionMs)
            }
            .sorted { $0.ms > $1.ms }
    }

    /// The aggregate series of one aggregation read before the cut, by the labels the stream's
    /// entries give the same series (`plain`).
    struct AggregatePart {
        var points: [Labels: (key: String, points: [Int64: Double])] = [:]
    }

    func streamRange(_ query: RangeQuery, aggregates candidates: [AggregateConfig.Bucket]) throws(QueryError) -> [RangeSeries] {
        guard let config = layout.aggregates, !candidates.isEmpty else { return try streamRange(query) }
        let first = query.firstBucket
        // The longest length the group buckets at since the range's start (`…:since:LENGTH`).
        let since = try one(["MGET"] + candidates.map { config.sincePrefix + $0.text }).array ?? []
        guard let at = candidates.indices.first(where: { i in
            guard i < since.count, let t = since[i].string.flatMap({ Int64($0) }) else { return false }
            return t == 0 || first >= t + config.graceMs
        }) else { return try streamRange(query) }
        let bucket = candidates[at]
        let keys = try streamKeys(query.selector)
        // No step before the cut: the streams alone (no RedisTimeSeries needed).
        guard let cut = try aggregateCut(keys.map(\.key), config: config, bucket: bucket, query: query), cut > first else {
            return try streamRange(query)
        }
        let rollup = { (agg: Aggregation) in "\(agg.rawValue)_\(bucket.text)" }
        // What each step is made of: avg from the sums and counts (exact, where an average of
        // averages is not), count by adding counts, sum by adding sums, min and max again.
        let parts: [(Aggregation, Aggregation)] = switch query.aggregation {
        case .avg: [(.sum, .sum), (.count, .sum)]
        case .count: [(.count, .sum)]
        case .sum: [(.sum, .sum)]
        case .min: [(.min, .min)]
        case .max: [(.max, .max)]
        case .last: []
        }
        let read: [AggregatePart]
        do {
            guard let r = try aggregateParts(query, parts.map { (rollup($0.0), $0.1) }, before: cut) else {
                // Two aggregate series for one series (an `[aggregate] key` changed while the old
                // series are kept): which holds what is not known, so the streams alone.
                return try streamRange(query)
            }
            read = r
        } catch .reply(_, let message) where message.lowercased().contains("unknown command") {
            // No RedisTimeSeries in this Redis: no aggregates to read.
            return try streamRange(query)
        }
        // The entries from the cut on.
        var buckets: [[Int64: Accumulator]] = []
        let infos = try streamScan(query.selector, from: max(0, first), to: query.end, keys: keys, cut: cut) { (i: Int, ms: Int64, v: Double) throws(QueryError) in
            if i == buckets.count { buckets.append([:]) }
            buckets[i][first + floorDiv(ms - first, query.step) * query.step, default: Accumulator()].add(v)
        }
        var out: [Labels: RangeSeries] = [:]
        for (i, info) in infos.enumerated() {
            let points = buckets[i].keys.sorted().map { Point(timestamp: $0, value: buckets[i][$0]!.value(query.aggregation)) }
            let id = Self.withoutEmpty(info.labels)
            // Two series of the streams that differ only by a tag with an empty value, which the
            // aggregates do not tell apart: the streams alone.
            guard out[id] == nil else { return try streamRange(query) }
            out[id] = RangeSeries(series: info, rollup: nil, sourceKey: info.key, points: points, streamFrom: cut)
        }
        // The aggregates' points before the cut (the first part's series: avg needs both).
        guard let head = read.first else { return Array(out.values) }
        for (labels, part) in head.points {
            var points: [Point] = []
            for t in part.points.keys.sorted() {
                guard let v = part.points[t] else { continue }
                if query.aggregation == .avg {
                    guard let n = read[1].points[labels]?.points[t], n > 0 else { continue }
                    points.append(Point(timestamp: t, value: v / n))
                } else {
                    points.append(Point(timestamp: t, value: v))
                }
            }
            if points.isEmpty { continue }
            let keysRead = read.compactMap { $0.points[labels]?.key }.joined(separator: ",")
            let name = parts.map { rollup($0.0) }.joined(separator: "+")
            let id = Self.withoutEmpty(labels)
            if var s = out[id] {
                s.points = points + s.points
                s.rollup = name
                s.sourceKey = keysRead + "," + s.sourceKey
                out[id] = s
            } else {
                // (No entry of it in the streams since the cut: the aggregates are all. Its key
                // is the aggregate's.)
                out[id] = RangeSeries(series: SeriesInfo(key: part.key, labels: labels), rollup: name, sourceKey: keysRead, points: points, streamFrom: cut)
            }
        }
        // Nothing at all: the streams alone say whether any series matches.
        if out.isEmpty { return try streamRange(query) }
        return Array(out.values)
    }

    /// An aggregate series' labels as the stream's entries give the same series: without the
    /// labels only aggregate series have (`rollup`, `agg`, `bucket`, `bucket_ms`, `spillway`), and a
    /// tag the worker renamed because it has one of those names (`tag_agg`) under its own name again
    /// (the stream's reader renames only `name`, `field` and `rollup`, as the worker does too).
    static func plain(_ labels: Labels) -> Labels {
        var out = labels
        for l in aggregateOnlyLabels {
            out[l] = nil
            if let v = out.removeValue(forKey: "tag_" + l) { out[l] = v }
        }
        out["rollup"] = nil
        return out
    }

    /// The labels aggregate series have and the stream's series do not (besides `rollup`, which
    /// rollups share).
    static let aggregateOnlyLabels = ["agg", "bucket", "bucket_ms", "spillway"]

    /// Labels without empty values: a series' identity across the two parts (the worker leaves out
    /// tags with an empty value; the stream's reader keeps them).
    static func withoutEmpty(_ labels: Labels) -> Labels {
        labels.filter { !$0.value.isEmpty }
    }

    /// Each part's aggregate series (`rollup` = `sum_1m`, combined into steps with its
    /// aggregation), read from the range's first step up to the cut. With two parts (avg: sums and
    /// counts), a series' sum and count are read in one MULTI/EXEC (pages of `pageSize` commands,
    /// so Redis is never held long): a bucket a worker writes again meanwhile (its figures in one
    /// MULTI/EXEC too) is read before or after, never half. Nil when two aggregate series have the
    /// same labels.
    func aggregateParts(_ query: RangeQuery, _ parts: [(rollup: String, combine: Aggregation)], before cut: Int64) throws(QueryError) -> [AggregatePart]? {
        // The query's own matchers apply to the stream's labels: a matcher on a tag named like an
        // aggregate's own label (`agg`) is checked on the labels read back, not in Redis.
        let pushed = query.selector.matchers.filter { !Self.aggregateOnlyLabels.contains($0.label) }
        // Per part, its series by labels (as the stream gives them).
        var found: [[Labels: SeriesInfo]] = []
        for part in parts {
            let selector = Selector(pushed + [try! LabelMatcher("rollup", .equal, part.rollup), try! LabelMatcher("spillway", .equal, "aggregate")])
            var byLabels: [Labels: SeriesInfo] = [:]
            for f in try timeseriesFind(selector, withLatest: false) {
                let labels = Self.plain(f.series.labels)
                guard query.selector.matches(labels) else { continue }
                if byLabels[labels] != nil { return nil }
                byLabels[labels] = f.series
            }
            found.append(byLabels)
        }
        // The reads: the first part's series in turn, each with the other parts' series of its
        // labels next to it (a series of a later part alone has nothing to go with).
        var reads: [(part: Int, labels: Labels, key: String)] = []
        var groups: [Range<Int>] = []
        for labels in found.first?.keys ?? [:].keys {
            let from = reads.count
            for (p, series) in found.enumerated() {
                if let f = series[labels] { reads.append((p, labels, f.key)) }
            }
            groups.append(from..<reads.count)
        }
        let window = [String(max(0, query.firstBucket)), String(cut - 1)]
        func command(_ r: (part: Int, labels: Labels, key: String)) -> [String] {
            ["TS.RANGE", r.key] + window + ["AGGREGATION", parts[r.part].combine.rawValue, String(query.step)]
        }
        var replies: [RedisReply] = []
        if parts.count == 1 {
            replies = try run(reads.map(command))
        } else {
            // Pages of whole groups, each page one transaction.
            var page: [Range<Int>] = []
            func flush() throws(QueryError) {
                guard let first = page.first, let last = page.last else { return }
                replies += try transaction(reads[first.lowerBound..<last.upperBound].map(command))
                page.removeAll()
            }
            var size = 0
            for g in groups {
                if size + g.count > max(limits.pageSize, parts.count), !page.isEmpty {
                    try flush()
                    size = 0
                }
                page.append(g)
                size += g.count
            }
            try flush()
        }
        var out = Array(repeating: AggregatePart(), count: parts.count)
        for (r, reply) in zip(reads, replies) {
            if case .error(let message) = reply {
                if message.contains("does not exist") { continue }
                throw .reply(command: "TS.RANGE \(r.key)", message: message)
            }
            guard let samples = reply.array else { throw .unexpected(command: "TS.RANGE", what: "not an array of samples") }
            var points: [Int64: Double] = [:]
            for s in samples {
                if let (t, v) = try Self.sample(s, command: "TS.RANGE") { points[t] = v }
            }
            out[r.part].points[r.labels] = (r.key, points)
        }
        return out
    }

    /// `commands` in one MULTI/EXEC: their replies (error replies among them). A Redis that
    /// refuses MULTI (an ACL without it) gets them as a plain pipeline.
    func transaction(_ commands: [[String]]) throws(QueryError) -> [RedisReply] {
        let (replies, error) = connection.pipeline([RedisCommand(["MULTI"])] + commands.map { RedisCommand($0) } + [RedisCommand(["EXEC"])])
        if let error { throw .redis(error) }
        if case .error = replies.first {
            // MULTI refused: the commands ran one by one, and EXEC said "without MULTI".
            return Array(replies.dropFirst().dropLast())
        }
        guard replies.count == commands.count + 2, let results = replies.last?.array, results.count == commands.count else {
            // A command refused when queued (EXECABORT): its own error names it.
            if let bad = replies.dropFirst().first(where: { if case .error = $0 { true } else { false } }), case .error(let message) = bad {
                throw .reply(command: commands.first?.first ?? "MULTI", message: message)
            }
            throw .unexpected(command: "EXEC", what: "not one reply per command")
        }
        return results
    }

    /// The start of the first step of the range read from the streams (see the rule above); nil
    /// when no aggregate can be read (a stream the group does not read).
    func aggregateCut(_ streams: [String], config: AggregateConfig, bucket: AggregateConfig.Bucket, query: RangeQuery) throws(QueryError) -> Int64? {
        let first = query.firstBucket, step = query.step
        guard !streams.isEmpty else { return nil }
        // The oldest entry of each stream the group has not acknowledged.
        var unacknowledged = Int64.max
        let groups = try run(streams.map { ["XINFO", "GROUPS", $0] })
        var pendingOf: [String] = []
        for (stream, reply) in zip(streams, groups) {
            // Not a stream any more, or no group: nothing of it is final.
            guard let list = reply.array else { return nil }
            var found = false
            for g in list {
                guard let pairs = g.array else { continue }
                var fields: [String: RedisReply] = [:]
                var i = 0
                while i + 1 < pairs.count {
                    if let k = pairs[i].string { fields[k] = pairs[i + 1] }
                    i += 2
                }
                guard fields["name"]?.string == config.group, let last = fields["last-delivered-id"]?.string.flatMap(Self.idMs) else { continue }
                found = true
                // (An entry not delivered yet has a larger ID: in this millisecond or a later one.)
                unacknowledged = min(unacknowledged, last)
                if case .integer(let n) = fields["pending"], n > 0 { pendingOf.append(stream) }
            }
            if !found { return nil }
        }
        let pending = try run(pendingOf.map { ["XPENDING", $0, config.group] })
        for reply in pending {
            // The oldest entry still pending: not acknowledged, so neither is its bucket.
            guard let summary = reply.array, summary.count >= 2 else { return nil }
            // (Acknowledged since XINFO: nothing pending any more.)
            guard let oldest = summary[1].string.flatMap(Self.idMs) else { continue }
            unacknowledged = min(unacknowledged, oldest)
        }
        var notFinal = floorDiv(unacknowledged - config.graceMs, bucket.ms) * bucket.ms
        // The buckets of these streams whose figures wait in the due set (members
        // `spillway:agg:GROUP:b:LENGTH:START:STREAM`).
        let wanted = Set(streams)
        var cursor = "0"
        var calls = 0
        repeat {
            let reply = try one(["ZSCAN", config.dueKey, cursor, "MATCH", KeyTemplate.escapeGlob(config.bucketStatePrefix(bucketMs: bucket.ms)) + "*",
                                 "COUNT", String(limits.pageSize)])
            guard let parts = reply.array, parts.count == 2, let next = parts[0].string, let items = parts[1].array else {
                throw .unexpected(command: "ZSCAN", what: "not [cursor, members]")
            }
            // Members and scores in turn.
            for m in stride(from: 0, to: items.count, by: 2) {
                guard let (ms, start, stream) = items[m].string.flatMap(config.parseBucketStateKey), ms == bucket.ms,
                      wanted.contains(stream) else { continue }
                notFinal = min(notFinal, start)
            }
            cursor = next
            calls += 1
            // The due set holds `max_open_buckets` (100,000 by default) and then some: past a
            // thousand pages, the streams are read.
            if calls >= 1000, cursor != "0" { return nil }
        } while cursor != "0"
        return min(first + floorDiv(notFinal - first, step) * step, query.end + 1)
    }

    /// The milliseconds of a stream ID (`1700000000000-3`).
    static func idMs(_ id: String) -> Int64? {
        id.split(separator: "-").first.flatMap { Int64($0) }
    }
}

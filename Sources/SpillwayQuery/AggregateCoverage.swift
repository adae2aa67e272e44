import RedisSink
import SpillwayConfig
import SpillwayPromQL

/// `range` over streams, when `[aggregate]` is declared: the buckets `spillway aggregate` holds
/// final are read from its RedisTimeSeries series (as a timeseries range reads a rollup), the rest
/// from the stream, so a long range costs a few samples per step instead of every entry, and a
/// stream trimmed since still answers from its aggregates.
///
/// When a stream's bucket is final (nothing can change its figures any more):
/// - every entry of the stream up to the bucket's end was acknowledged by the group: its end is at
///   or before the milliseconds of the group's last delivered ID (a later entry gets a larger ID)
///   and of its oldest pending entry (XINFO GROUPS, XPENDING);
/// - and the bucket is not in the group's due set: its figures were written since their last
///   change (a bucket with figures not yet written, or with late ones, is there).
/// A step bucket is read from the aggregates when every aggregate bucket in it is final, so a
/// stream's range splits once: steps before its cut from the aggregates, the others from its
/// entries. A stream the group does not read has no cut: its entries are read.
///
/// Not seen by that rule: buckets from before a bucket length was added to `[aggregate] buckets`
/// (the worker did not bucket their entries at that length); `--where rollup=` reads the streams.
extension QueryEngine {
    /// The aggregate bucket length a stream range reads: among `[aggregate] buckets`, the longest
    /// that divides the step and whose retention covers the range (as a rollup is chosen). Nil:
    /// the streams alone (no `[aggregate]`, `last`, a selector naming `rollup`, buckets not on
    /// the epoch, a selector without an `=` name and field).
    func aggregateBucket(for query: RangeQuery, now: Int64) -> AggregateConfig.Bucket? {
        guard let a = layout.aggregates, query.alignment == 0, query.aggregation != .last, !query.selector.mentions("rollup"),
              query.selector.equality("name") != nil, query.selector.equality("field") != nil else { return nil }
        return a.buckets
            .filter { b in
                b.ms > 0 && b.ms <= query.step && query.step % b.ms == 0 && (b.retentionMs == 0 || query.firstBucket >= now - b.retentionMs)
            }
            .max { $0.ms < $1.ms }
    }

    /// The aggregate series of one aggregation, read up to each stream's cut.
    struct AggregatePart {
        /// By series labels (as the stream's entries give them): the points and the key read.
        var points: [Labels: (key: String, stream: String?, points: [Int64: Double])] = [:]
    }

    func streamRange(_ query: RangeQuery, aggregates bucket: AggregateConfig.Bucket) throws(QueryError) -> [RangeSeries] {
        guard let config = layout.aggregates else { return try streamRange(query) }
        let keys = try streamKeys(query.selector)
        let cuts = try streamCuts(keys.map(\.key), config: config, bucket: bucket, query: query)
        let first = query.firstBucket
        // No stream has a final step in the range: the streams alone (no RedisTimeSeries needed).
        guard cuts.values.contains(where: { $0 > first }) else { return try streamRange(query) }
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
        var read: [AggregatePart] = []
        do {
            for (stored, combined) in parts {
                read.append(try aggregatePart(query, rollup: rollup(stored), combine: combined, keys: keys, cuts: cuts))
            }
        } catch .reply(_, let message) where message.lowercased().contains("unknown command") {
            // No RedisTimeSeries in this Redis: no aggregates to read.
            return try streamRange(query)
        }
        // The entries from each stream's cut on.
        var buckets: [[Int64: Accumulator]] = []
        let infos = try streamScan(query.selector, from: max(0, first), to: query.end, keys: keys, starts: cuts) { (i: Int, ms: Int64, v: Double) throws(QueryError) in
            if i == buckets.count { buckets.append([:]) }
            buckets[i][first + floorDiv(ms - first, query.step) * query.step, default: Accumulator()].add(v)
        }
        var out: [Labels: RangeSeries] = [:]
        for (i, info) in infos.enumerated() {
            let points = buckets[i].keys.sorted().map { Point(timestamp: $0, value: buckets[i][$0]!.value(query.aggregation)) }
            out[Self.plain(info.labels)] = RangeSeries(series: info, rollup: nil, sourceKey: info.key, points: points, streamFrom: cuts[info.key] ?? first)
        }
        // The aggregates' points before each cut (the first part's series: avg needs both).
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
            let cut = part.stream.flatMap { cuts[$0] } ?? query.end + 1
            if var s = out[labels] {
                s.points = points + s.points
                s.rollup = name
                s.sourceKey = keysRead + "," + s.sourceKey
                out[labels] = s
            } else {
                let key = part.stream ?? part.key
                out[labels] = RangeSeries(series: SeriesInfo(key: key, labels: labels), rollup: name, sourceKey: keysRead,
                                          points: points, streamFrom: part.stream == nil ? nil : cut)
            }
        }
        return Array(out.values)
    }

    /// A series' labels without those only aggregate series have (`rollup`, `agg`, `bucket`,
    /// `bucket_ms`, `spillway`; a tag named like one, `tag_agg`, is `agg` again, as in the stream)
    /// and without empty values: the labels the stream's entries give the same series.
    static func plain(_ labels: Labels) -> Labels {
        var out = labels.filter { !$0.value.isEmpty }
        for l in ["agg", "bucket", "bucket_ms", "spillway"] {
            out[l] = nil
            if let v = out.removeValue(forKey: "tag_" + l) { out[l] = v }
        }
        out["rollup"] = nil
        return out
    }

    /// One aggregation's series (`rollup` = `sum_1m`), each read from the range's first step up to
    /// its stream's cut and combined into steps with `combine`.
    func aggregatePart(_ query: RangeQuery, rollup: String, combine: Aggregation,
                       keys: [(key: String, labels: Labels)], cuts: [String: Int64]) throws(QueryError) -> AggregatePart {
        let selector = Selector(query.selector.matchers + [try! LabelMatcher("rollup", .equal, rollup)])
        let found = try timeseriesFind(selector, withLatest: false)
        var part = AggregatePart()
        var commands: [[String]] = []
        var meta: [(Labels, String, String?)] = []
        for f in found {
            let labels = Self.plain(f.series.labels)
            // Its stream: the one whose key's labels it has (none: the stream is gone, and its
            // aggregates are all there is).
            let stream = keys.first { k in k.labels.allSatisfy { labels[$0.key] == $0.value } }?.key
            let end = (stream.flatMap { cuts[$0] } ?? query.end + 1) - 1
            guard end >= query.firstBucket else { continue }
            commands.append(["TS.RANGE", f.series.key, String(max(0, query.firstBucket)), String(end), "AGGREGATION", combine.rawValue, String(query.step)])
            meta.append((labels, f.series.key, stream))
        }
        let replies = try run(commands)
        for ((labels, key, stream), reply) in zip(meta, replies) {
            if case .error(let message) = reply {
                if message.contains("does not exist") { continue }
                throw .reply(command: "TS.RANGE \(key)", message: message)
            }
            guard let samples = reply.array else { throw .unexpected(command: "TS.RANGE", what: "not an array of samples") }
            var points: [Int64: Double] = [:]
            for s in samples {
                if let (t, v) = try Self.sample(s, command: "TS.RANGE") { points[t] = v }
            }
            part.points[labels] = (key, stream, points)
        }
        return part
    }

    /// Per stream, the start of the first step of the range not read from the aggregates (see the
    /// rule above): the range's first step when nothing before it is final, past its end when all
    /// of it is.
    func streamCuts(_ streams: [String], config: AggregateConfig, bucket: AggregateConfig.Bucket, query: RangeQuery) throws(QueryError) -> [String: Int64] {
        let first = query.firstBucket, step = query.step
        var acknowledged: [String: Int64] = [:]
        let groups = try run(streams.map { ["XINFO", "GROUPS", $0] })
        var pendingOf: [String] = []
        for (stream, reply) in zip(streams, groups) {
            // Not a stream any more, or no group: nothing of it is final.
            guard let list = reply.array else { continue }
            for g in list {
                guard let pairs = g.array else { continue }
                var fields: [String: RedisReply] = [:]
                var i = 0
                while i + 1 < pairs.count {
                    if let k = pairs[i].string { fields[k] = pairs[i + 1] }
                    i += 2
                }
                guard fields["name"]?.string == config.group, let last = fields["last-delivered-id"]?.string.flatMap(Self.idMs) else { continue }
                acknowledged[stream] = last
                if case .integer(let n) = fields["pending"], n > 0 { pendingOf.append(stream) }
            }
        }
        let pending = try run(pendingOf.map { ["XPENDING", $0, config.group] })
        for (stream, reply) in zip(pendingOf, pending) {
            // The oldest entry still pending: not acknowledged, so neither is its bucket.
            guard let summary = reply.array, summary.count >= 2, let oldest = summary[1].string.flatMap(Self.idMs) else {
                acknowledged[stream] = nil
                continue
            }
            acknowledged[stream] = min(acknowledged[stream] ?? oldest, oldest)
        }
        // The first bucket of each stream whose figures wait in the due set (members
        // `spillway:agg:GROUP:b:LENGTH:START:STREAM`), read in pages.
        var waiting: [String: Int64] = [:]
        if !acknowledged.isEmpty {
            let dueKey = config.statePrefix + "due", prefix = config.statePrefix + "b:\(bucket.ms):"
            let wanted = Set(acknowledged.keys)
            var offset = 0
            while true {
                guard let page = try one(["ZRANGE", dueKey, String(offset), String(offset + limits.pageSize - 1)]).array else {
                    throw .unexpected(command: "ZRANGE", what: "not an array")
                }
                for m in page {
                    guard let member = m.string, member.hasPrefix(prefix) else { continue }
                    let rest = member.dropFirst(prefix.count)
                    guard let colon = rest.firstIndex(of: ":"), let start = Int64(rest[..<colon]) else { continue }
                    let stream = String(rest[rest.index(after: colon)...])
                    guard wanted.contains(stream) else { continue }
                    waiting[stream] = min(waiting[stream] ?? start, start)
                }
                guard page.count == limits.pageSize else { break }
                offset += page.count
                // The due set holds at most `max_open_buckets` (100,000 by default) and then some:
                // past a million, every stream is read.
                if offset >= 1_000_000 { return [:] }
            }
        }
        var cuts: [String: Int64] = [:]
        for (stream, ack) in acknowledged {
            // The first bucket not final: the one holding the acknowledged bound, or an earlier
            // one still due.
            let notFinal = min(floorDiv(ack, bucket.ms) * bucket.ms, waiting[stream] ?? .max)
            let cut = floorDiv(notFinal, step) * step
            cuts[stream] = min(max(cut, first), query.end + 1)
        }
        return cuts
    }

    /// The milliseconds of a stream ID (`1700000000000-3`).
    static func idMs(_ id: String) -> Int64? {
        id.split(separator: "-").first.flatMap { Int64($0) }
    }
}

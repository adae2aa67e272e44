import Foundation
import RedisSink
@testable import SpillwayAggregate
import SpillwayConfig
import SpillwayCore
import SpillwayPromQL
import SpillwayQuery
import SpillwayTestSupport
import Testing

/// The aggregates read back: `spillway query` over streams picks them with `rollup=…` (as rollups),
/// `serve` names them `NAME_FIELD:ROLLUP` (as Prometheus names recording rules' series) and lists
/// them; every figure is what TS.RANGE gives on the aggregate's key.
@Suite(.serialized) struct AggregatesReadBack {
    @Test func queryAndServeReadTheAggregates() throws {
        let server = try RedisServer(stack: true)
        defer { server.stop(); server.removeFiles() }
        let start = pastStart()
        try writeRecords(port: server.port, sampleRecords(startMs: start, stepMs: 250, perSeries: 120))
        let (c, redis) = try aggregateConfig(port: server.port)
        let client = try RESPClient(port: server.port)
        try drive([makeWorker(c, redis)], client, allStreams)
        let key = "agg:web-1:cpu:usage_user:avg:10s:cpu=cpu0:dc=eu-1"
        let stored: [(Int64, Double)] = (try client.call(["TS.RANGE", key, "-", "+"]).array ?? []).compactMap { s in
            guard let p = s.array, p.count == 2, let t = p[0].int, let v = p[1].string.flatMap(Double.init) else { return nil }
            return (t, v)
        }
        #expect(stored.count >= 3, "\(stored)")
        let engine = QueryEngine(redis: redis, layout: QueryLayout(redis: redis, inputKeys: []), limits: QueryLimits())
        // query: the selector names the rollup; a step of 10 s reads each bucket as it is.
        let selector = Selector(name: "cpu", field: "usage_user", [try LabelMatcher("rollup", .equal, "avg_10s"), try LabelMatcher("host", .equal, "web-1"),
                                                                  try LabelMatcher("cpu", .equal, "cpu0")])
        let r = try engine.range(RangeQuery(selector: selector, from: stored.first!.0, to: stored.last!.0, step: 10_000, aggregation: .avg), now: start + 600_000)
        #expect(r.series.count == 1 && r.series.first?.sourceKey == key && r.series.first?.rollup == "avg_10s", "\(r.series.map { "\($0.sourceKey) \($0.rollup ?? "nil")" })")
        #expect(r.series.first?.points.map { [Double($0.timestamp), $0.value] } == stored.map { [Double($0.0), $0.1] })
        // Without the rollup matcher: the stream's own entries, as before.
        let raw = try engine.range(RangeQuery(selector: Selector(name: "cpu", field: "usage_user", [try LabelMatcher("host", .equal, "web-1")]),
                                              from: stored.first!.0, to: stored.last!.0, step: 10_000, aggregation: .avg), now: start + 600_000)
        #expect(raw.series.allSatisfy { $0.sourceKey == "metrics:web-1:cpu" } && !raw.series.isEmpty)
        // `rollup=` selects series without a rollup: the streams.
        let streams = try engine.range(RangeQuery(selector: Selector(name: "cpu", field: "usage_user", [try LabelMatcher("rollup", .equal, ""), try LabelMatcher("host", .equal, "web-1")]),
                                                  from: stored.first!.0, to: stored.last!.0, step: 10_000, aggregation: .avg), now: start + 600_000)
        #expect(!streams.series.isEmpty && streams.series.allSatisfy { $0.sourceKey == "metrics:web-1:cpu" })
        // --agg count over a count aggregate adds its counts up (as over a count rollup).
        let countKey = "agg:web-1:cpu:usage_user:count:10s:cpu=cpu0:dc=eu-1"
        let counts: [Double] = (try client.call(["TS.RANGE", countKey, "-", "+"]).array ?? []).compactMap { $0.array?[1].string.flatMap(Double.init) }
        let counted = try engine.range(RangeQuery(selector: Selector(name: "cpu", field: "usage_user", [try LabelMatcher("rollup", .equal, "count_10s"),
                                                                                                      try LabelMatcher("host", .equal, "web-1"), try LabelMatcher("cpu", .equal, "cpu0")]),
                                                  from: stored.first!.0, to: stored.last!.0, step: 20_000, aggregation: .count), now: start + 600_000)
        #expect(counted.series.first?.points.map(\.value).reduce(0, +) == counts.reduce(0, +) && counts.reduce(0, +) > Double(counts.count), "\(counted.series) \(counts)")
        // serve: cpu_usage_user:avg_10s, listed with the series.
        let api = PrometheusAPI()
        let now = stored.last!.0 + 1000
        let source = PrometheusSource(engine: engine, now: now, maxSamples: 100_000)
        let names = api.handle(path: "/api/v1/label/__name__/values", parameters: [], now: now, source: source)
        let list = (try JSONSerialization.jsonObject(with: Data(names.body)) as? [String: Any])?["data"] as? [String] ?? []
        #expect(list.contains("cpu_usage_user") && list.contains("cpu_usage_user:avg_10s") && list.contains("mem_used:max_1s"), "\(list)")
        // Listed for a window from `start` while a query from there charts them: an aggregate's
        // sample is stamped at its bucket's start and written after its end, so its bucket counts
        // twice (10 s buckets: 20 s past the 5-minute lookback).
        func listedSince(_ ms: Int64) -> [String] {
            let r = api.handle(path: "/api/v1/label/__name__/values", parameters: [("start", "\(Double(ms) / 1000)")], now: now, source: source)
            return (try? JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any])?["data"] as? [String] ?? []
        }
        let newest = stored.last!.0
        #expect(listedSince(newest + 300_000 + 19_000).contains("cpu_usage_user:avg_10s"))
        #expect(!listedSince(newest + 300_000 + 21_000).contains("cpu_usage_user:avg_10s"))
        let q = api.handle(path: "/api/v1/query", parameters: [("query", #"cpu_usage_user:avg_10s{host="web-1",cpu="cpu0"}"#), ("time", "\(Double(now) / 1000)")],
                           now: now, source: source)
        #expect(q.status == 200)
        let result = ((try JSONSerialization.jsonObject(with: Data(q.body)) as? [String: Any])?["data"] as? [String: Any])?["result"] as? [[String: Any]] ?? []
        #expect(result.count == 1)
        #expect(result.first?["metric"] as? [String: String] == ["__name__": "cpu_usage_user:avg_10s", "cpu": "cpu0", "dc": "eu-1", "host": "web-1"])
        #expect(((result.first?["value"] as? [Any])?[1] as? String).flatMap(Double.init) == stored.last!.1, "\(String(decoding: q.body, as: UTF8.self))")
    }
}

/// `query range` over streams with `[aggregate]` declared reads each stream's final buckets from
/// the aggregates and the rest from its entries: the figures equal the streams' own (the values are
/// multiples of 1/8, so sums and averages are exact either way), and a stream trimmed since still
/// answers for the buckets its aggregates hold.
@Suite(.serialized) struct RangeOverAggregates {
    /// Every entry of `streams` read and acknowledged by the group (buckets may still wait).
    func read(_ client: RESPClient, _ streams: [String]) throws -> Bool {
        for s in streams {
            guard try client.call(["XPENDING", s, "spillway-aggregate"]).array?.first?.int == 0,
                  let g = try client.call(["XINFO", "GROUPS", s]).array?.first?.array else { return false }
            var f: [String: RESPValue] = [:]
            for i in stride(from: 0, to: g.count - 1, by: 2) { if let k = g[i].string { f[k] = g[i + 1] } }
            guard f["lag"]?.int == 0 else { return false }
        }
        return true
    }

    func figures(_ r: RangeResult) -> [String] {
        r.series.map { s in s.series.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",") + ": "
            + s.points.map { "\($0.timestamp)=\($0.value)" }.joined(separator: " ") }
    }

    /// A redis-stack server holding 30 s of entries from 80 s ago (120 per series, every 250 ms),
    /// read, aggregated and written by one worker (every bucket final).
    func aggregated30s() throws -> (RedisServer, Int64, AggregateConfig, RedisOutputConfig, RESPClient) {
        let server = try RedisServer(stack: true)
        do {
            let start = pastStart(80)
            try writeRecords(port: server.port, sampleRecords(startMs: start, stepMs: 250, perSeries: 120))
            let (c, redis) = try aggregateConfig(port: server.port)
            let client = try RESPClient(port: server.port)
            try drive([makeWorker(c, redis)], client, allStreams)
            return (server, start, c, redis, client)
        } catch {
            server.stop()
            server.removeFiles()
            throw error
        }
    }

    @Test func finalBucketsComeFromTheAggregatesAndTheRestFromTheStream() throws {
        // 30 s of entries, aggregated and written (every bucket final)…
        let (server, start, c, redis, client) = try aggregated30s()
        defer { server.stop(); server.removeFiles() }
        // …then 20 s more, not read by the group yet.
        try writeRecords(port: server.port, sampleRecords(startMs: start + 30_000, stepMs: 250, perSeries: 80, seed: 2))
        var declared = c
        declared.declared = true
        let withAggregates = QueryEngine(redis: redis, layout: QueryLayout(redis: redis, inputKeys: [], aggregates: declared), limits: QueryLimits())
        let streamsOnly = QueryEngine(redis: redis, layout: QueryLayout(redis: redis, inputKeys: [], aggregates: nil), limits: QueryLimits())
        let now = start + 80_000
        func query(_ agg: SpillwayQuery.Aggregation, step: Int64, _ matchers: [LabelMatcher] = []) -> RangeQuery {
            RangeQuery(selector: Selector(name: "cpu", field: "usage_user", matchers), from: start, to: start + 49_999, step: step, aggregation: agg)
        }
        var expected: [String: [String]] = [:]
        for agg in [SpillwayQuery.Aggregation.avg, .min, .max, .sum, .count] {
            for step: Int64 in [10_000, 20_000] {
                let plain = try streamsOnly.range(query(agg, step: step), now: now)
                let mixed = try withAggregates.range(query(agg, step: step), now: now)
                #expect(plain.series.count == 6 && plain.series.allSatisfy { $0.rollup == nil && $0.streamFrom == nil })
                #expect(figures(mixed) == figures(plain), "\(agg) step \(step)")
                // The group's last entry is 29.75 s in: the 10 s bucket holding it may still get
                // entries, so the aggregates serve the steps before it.
                let cut = step == 10_000 ? start + 20_000 : floorDiv20(start + 20_000)
                #expect(mixed.series.allSatisfy { $0.streamFrom == cut }, "\(mixed.series.map { $0.streamFrom ?? -1 }) \(cut)")
                let from = agg == .avg ? "sum_10s+count_10s" : "\(agg == .count ? "count" : agg.rawValue)_10s"
                #expect(mixed.series.allSatisfy { $0.rollup == from && $0.sourceKey.hasPrefix("agg:") && $0.sourceKey.hasSuffix(",\($0.series.key)") },
                        "\(mixed.series.map { "\($0.rollup ?? "-") \($0.sourceKey)" })")
                expected["\(agg) \(step)"] = figures(plain)
            }
        }
        // `last`, `rollup=` and a step the buckets do not divide read the streams alone.
        #expect(try withAggregates.range(query(.last, step: 10_000), now: now).series.allSatisfy { $0.rollup == nil && $0.streamFrom == nil })
        #expect(try withAggregates.range(query(.avg, step: 10_000, [try LabelMatcher("rollup", .equal, "")]), now: now).series.allSatisfy { $0.rollup == nil })
        #expect(try withAggregates.range(query(.avg, step: 1_500), now: now).series.allSatisfy { $0.rollup == nil && $0.streamFrom == nil })

        // The group reads the rest with a long grace: its buckets wait in the due set, so the
        // stream still serves them.
        var patient = c
        patient.graceMs = 600_000
        let w = makeWorker(patient, redis)
        let deadline = Date().addingTimeInterval(30)
        while try !read(client, allStreams), Date() < deadline { _ = try w.round() }
        #expect(try read(client, allStreams))
        #expect((try client.call(["ZCARD", "spillway:agg:spillway-aggregate:due"]).int ?? 0) > 0)
        let waiting = try withAggregates.range(query(.avg, step: 10_000), now: now)
        #expect(figures(waiting) == expected["avg 10000"])
        #expect(waiting.series.allSatisfy { $0.streamFrom == start + 30_000 }, "\(waiting.series.map { $0.streamFrom ?? -1 })")

        // The streams trimmed to their last 20 s: the first 30 s are only in the aggregates.
        for s in allStreams { _ = try client.call(["XTRIM", s, "MINID", String(start + 30_000)]) }
        for agg in [SpillwayQuery.Aggregation.avg, .min, .max, .sum, .count] {
            let step: Int64 = 10_000
            let answer = try withAggregates.range(query(agg, step: step), now: now)
            #expect(figures(answer) == expected["\(agg) \(step)"], "\(agg) after the trim")
            let trimmed = try streamsOnly.range(query(agg, step: step), now: now)
            #expect(trimmed.series.allSatisfy { $0.points.first?.timestamp == start + 30_000 }, "\(figures(trimmed))")
        }
    }

    func floorDiv20(_ t: Int64) -> Int64 { t - ((t % 20_000) + 20_000) % 20_000 }

    /// A group that existed before its first worker of this version (or whose list was lost):
    /// entries it acknowledged may not be in the aggregates, so its lengths count from now.
    @Test func aGroupThatExistedBeforeCountsFromNow() throws {
        let server = try RedisServer(stack: true)
        defer { server.stop(); server.removeFiles() }
        let start = pastStart(80)
        try writeRecords(port: server.port, sampleRecords(startMs: start, stepMs: 1000, perSeries: 5))
        let client = try RESPClient(port: server.port)
        #expect(try client.call(["XGROUP", "CREATE", "metrics:web-1:cpu", "spillway-aggregate", "0"]).string == "OK")
        let (c, redis) = try aggregateConfig(port: server.port)
        _ = try makeWorker(c, redis).round()
        let marks = try client.call(["MGET", "spillway:agg:spillway-aggregate:since:1s", "spillway:agg:spillway-aggregate:since:10s"]).array?.compactMap { $0.string.flatMap { Int64($0) } } ?? []
        #expect(marks.count == 2 && marks.allSatisfy { $0 >= start + 80_000 - 5_000 }, "\(marks)")
    }

    /// An entry whose ID is not its time (a raised ID, `ids = "auto"` after an outage, a record given
    /// a new ID after an OOM refusal): the worker buckets it by its `timestamp`, so the stream part
    /// counts only entries timed at or after the cut, and no entry is ever counted twice. Also:
    /// a bucket length added to the group later is used only for ranges after it was added, and a
    /// stream the group does not read yet means the streams alone.
    @Test func anEntryWhoseIDIsNotItsTimeIsCountedOnce() throws {
        let (server, start, c, redis, client) = try aggregated30s()
        defer { server.stop(); server.removeFiles() }
        // The group's first worker: its lengths cover every entry (the group reads from the start).
        #expect(try client.call(["MGET", "spillway:agg:spillway-aggregate:since:1s", "spillway:agg:spillway-aggregate:since:10s"]).array?.map(\.string) == ["0", "0"])
        #expect(try client.call(["GET", "spillway:agg:spillway-aggregate:buckets"]).string == "1s,10s")
        // 20 s more, then an entry timed 5 s in with an ID past them all.
        try writeRecords(port: server.port, sampleRecords(startMs: start + 30_000, stepMs: 250, perSeries: 80, seed: 2))
        let late = ["XADD", "metrics:web-1:cpu", "\(start + 50_500)-0", "usage_user", "1000", "usage_idle", "0", "ticks", "1",
                    "tag_cpu", "cpu0", "tag_dc", "eu-1", "tag_host", "web-1", "timestamp", String(start + 5_000)]
        #expect(try client.call(late).string == "\(start + 50_500)-0")
        // And the only entry of a tag set, as late: after the workers read it, a series only the
        // aggregates hold.
        _ = try client.call(["XADD", "metrics:web-1:cpu", "\(start + 50_600)-0", "usage_user", "7", "tag_cpu", "cpu9", "tag_dc", "eu-1", "tag_host", "web-1",
                             "timestamp", String(start + 6_000)])
        var declared = c
        declared.declared = true
        let withAggregates = QueryEngine(redis: redis, layout: QueryLayout(redis: redis, inputKeys: [], aggregates: declared), limits: QueryLimits())
        let streamsOnly = QueryEngine(redis: redis, layout: QueryLayout(redis: redis, inputKeys: [], aggregates: nil), limits: QueryLimits())
        let now = start + 80_000
        let cpu0 = [try LabelMatcher("host", .equal, "web-1"), try LabelMatcher("cpu", .equal, "cpu0")]
        func counts(_ engine: QueryEngine, step: Int64 = 10_000) throws -> RangeSeries? {
            try engine.range(RangeQuery(selector: Selector(name: "cpu", field: "usage_user", cpu0), from: start, to: start + 59_999, step: step, aggregation: .count),
                             now: now).series.first
        }
        func total(_ s: RangeSeries?) -> Double { s?.points.map(\.value).reduce(0, +) ?? -1 }
        // Not read by the group yet: counted by neither part (its time is before the cut), never by both.
        let before = try counts(withAggregates)
        #expect(before?.streamFrom == start + 20_000 && before?.rollup == "count_10s", "\(String(describing: before))")
        let plainBefore = try counts(streamsOnly)
        #expect(total(before) == 200 && total(plainBefore) == 201)
        // Read and written: in its own bucket's aggregate, and not from the stream.
        try drive([makeWorker(c, redis)], client, allStreams)
        let after = try counts(withAggregates)
        let plain = try counts(streamsOnly)
        #expect(after?.streamFrom == start + 50_000, "\(String(describing: after))")
        #expect(total(after) == 201 && total(plain) == 201, "\(String(describing: after)) \(String(describing: plain))")
        #expect(after?.points.first { $0.timestamp == start }?.value == 41 && plain?.points.first { $0.timestamp == start }?.value == 40)
        let avg = try withAggregates.range(RangeQuery(selector: Selector(name: "cpu", field: "usage_user", cpu0), from: start, to: start + 9_999, step: 10_000, aggregation: .avg),
                                           now: now).series.first
        let avgPlain = try streamsOnly.range(RangeQuery(selector: Selector(name: "cpu", field: "usage_user", cpu0), from: start, to: start + 9_999, step: 10_000, aggregation: .avg),
                                             now: now).series.first
        let sum = try streamsOnly.range(RangeQuery(selector: Selector(name: "cpu", field: "usage_user", cpu0), from: start, to: start + 9_999, step: 10_000, aggregation: .sum),
                                        now: now).series.first?.points.first?.value ?? 0
        #expect(avg?.points.first?.value == (sum + 1000) / 41 && avgPlain?.points.first?.value == sum / 40, "\(String(describing: avg)) \(sum)")
        let cpu9 = RangeQuery(selector: Selector(name: "cpu", field: "usage_user", [try LabelMatcher("cpu", .equal, "cpu9")]), from: start, to: start + 59_999,
                              step: 10_000, aggregation: .sum)
        let only = try withAggregates.range(cpu9, now: now).series
        #expect(only.count == 1 && only.first?.points == [Point(timestamp: start, value: 7)] && only.first?.series.key.hasPrefix("agg:web-1:cpu:usage_user:sum:10s") == true
                && only.first?.series.labels == ["name": "cpu", "field": "usage_user", "host": "web-1", "cpu": "cpu9", "dc": "eu-1"], "\(only.map { "\($0.series) \($0.points)" })")
        #expect(try streamsOnly.range(cpu9, now: now).series.first?.points == [Point(timestamp: start + 50_000, value: 7)])
        // serve, for windows that are the aggregates' buckets ((t - 10s, t] with t + 1ms on the
        // 10 s): the same split.
        let api = PrometheusAPI()
        let source = PrometheusSource(engine: withAggregates, now: now, maxSamples: 100_000)
        let r = api.handle(path: "/api/v1/query_range", parameters: [("query", #"count_over_time(cpu_usage_user{host="web-1",cpu="cpu0"}[10s])"#),
                                                                     ("start", "\(Double(start + 9_999) / 1000)"), ("end", "\(Double(start + 59_999) / 1000)"), ("step", "10")],
                           now: now, source: source)
        let result = ((try JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any])?["data"] as? [String: Any])?["result"] as? [[String: Any]] ?? []
        let values = (result.first?["values"] as? [[Any]] ?? []).compactMap { ($0.last as? String).flatMap(Double.init) }
        #expect(r.status == 200 && result.count == 1 && values.first == 41 && values.reduce(0, +) == 201, "\(String(decoding: r.body, as: UTF8.self))")

        // A worker with a length the group did not have: marked from now, so a range from before
        // reads the longest length marked before it (10s, not 20s).
        let running = makeWorker(c, redis)
        _ = try running.round()
        var longer = c
        longer.buckets.append(AggregateConfig.Bucket(ms: 20_000, text: "20s", retentionMs: 0))
        _ = try makeWorker(longer, redis).round()
        func since(_ bucket: String) throws -> Int64? { try client.call(["GET", "spillway:agg:spillway-aggregate:since:" + bucket]).string.flatMap { Int64($0) } }
        let marked = try since("20s") ?? 0
        #expect(marked >= start + 80_000 - 5_000, "\(marked) \(start)")
        #expect(try since("10s") == 0 && client.call(["GET", "spillway:agg:spillway-aggregate:buckets"]).string == "1s,10s,20s")
        declared.buckets = longer.buckets
        let withLonger = QueryEngine(redis: redis, layout: QueryLayout(redis: redis, inputKeys: [], aggregates: declared), limits: QueryLimits())
        let by20 = try counts(withLonger, step: 20_000)
        #expect(by20?.rollup == "count_10s" && total(by20) == 201, "\(String(describing: by20))")
        // A worker still running without 20s (a rolling restart) moves its mark on at each commit…
        usleep(20_000)
        try writeRecords(port: server.port, sampleRecords(startMs: start + 51_000, stepMs: 250, perSeries: 4, seed: 3))
        for _ in 0..<50 where try since("20s") == marked { _ = try running.round(); usleep(10_000) }
        #expect(try since("20s") ?? 0 > marked)
        // …a worker started without it deletes it…
        _ = try makeWorker(c, redis).round()
        #expect(try since("20s") == nil && since("10s") == 0)
        // …and a length written anew (10000ms for 10s) is a new length.
        var renamed = c
        renamed.buckets[1].text = "10000ms"
        let renamedWorker = makeWorker(renamed, redis)
        _ = try renamedWorker.round()
        #expect(try since("10000ms") ?? 0 > marked && since("10s") == nil && since("1s") == 0)
        // A worker that writes a due bucket under another name (10s) moves that length's mark
        // (10000ms) on too: the group's 10000ms series miss that bucket.
        try writeRecords(port: server.port, sampleRecords(startMs: start + 52_000, stepMs: 250, perSeries: 4, seed: 4))
        for _ in 0..<100 where try !read(client, allStreams) { _ = try renamedWorker.round(); usleep(10_000) }
        #expect(try read(client, allStreams))
        let waiting = try client.call(["ZCARD", "spillway:agg:spillway-aggregate:due"]).int ?? 0
        #expect(waiting > 0)
        usleep(1_200_000)
        let beforeWrite = try since("10000ms") ?? 0
        usleep(20_000)
        let finalizedBefore = running.counters.finalized
        _ = try running.round()
        let afterWrite = try since("10000ms") ?? 0
        #expect(running.counters.finalized > finalizedBefore && afterWrite > beforeWrite, "\(running.counters) \(afterWrite) \(beforeWrite)")

        // A stream of cpu the group has not read yet: no aggregates at all.
        _ = try client.call(["XADD", "metrics:web-3:cpu", "\(start + 40_000)-0", "usage_user", "1", "tag_cpu", "cpu0", "tag_host", "web-3", "timestamp", String(start + 40_000)])
        let unread = try withAggregates.range(RangeQuery(selector: Selector(name: "cpu", field: "usage_user", [try LabelMatcher("cpu", .equal, "cpu0")]),
                                                         from: start, to: start + 59_999, step: 10_000, aggregation: .count), now: now)
        #expect(unread.series.count == 3 && unread.series.allSatisfy { $0.streamFrom == nil && $0.rollup == nil }, "\(figures(unread))")
    }
}

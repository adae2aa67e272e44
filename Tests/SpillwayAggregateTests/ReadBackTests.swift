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
        #expect(r.series.count == 1 && r.series.first?.sourceKey == key)
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

    @Test func finalBucketsComeFromTheAggregatesAndTheRestFromTheStream() throws {
        let server = try RedisServer(stack: true)
        defer { server.stop(); server.removeFiles() }
        let start = pastStart(80)
        // 30 s of entries, aggregated and written (every bucket final)…
        try writeRecords(port: server.port, sampleRecords(startMs: start, stepMs: 250, perSeries: 120))
        let (c, redis) = try aggregateConfig(port: server.port)
        let client = try RESPClient(port: server.port)
        try drive([makeWorker(c, redis)], client, allStreams)
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
}

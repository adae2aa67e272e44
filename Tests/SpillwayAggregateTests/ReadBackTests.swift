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

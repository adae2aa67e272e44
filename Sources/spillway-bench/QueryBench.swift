import Foundation
import Logging
import RedisSink
import SpillwayBatch
import SpillwayConfig
import SpillwayCore
import SpillwayPromQL
import SpillwayQuery
import SpillwayTestSupport

/// `query range` over a day of 10 s samples for 100 series (10 cpus × 10 fields, written by the
/// agent's writer with rollups avg:5m and avg:1h), from a rollup and from the raw series, and
/// `serve`'s query_range over the same day; each next to the same TS.RANGE commands sent by a
/// plain client on one connection (what Redis itself takes), measured in the same round.
func queryBenchmarks(rounds: Int) throws {
    let server = try RedisServer(stack: true)
    defer { server.stop(); server.removeFiles() }
    var config = RedisOutputConfig()
    config.endpoint = try RedisEndpoint.parse(server.url)
    config.format = .timeseries
    config.key = try KeyTemplate(RedisOutputConfig.defaultSeriesKey, allowField: true)
    config.rollups = ["avg:5m:0", "avg:1h:0"].map { RedisOutputConfig.Rollup.parse($0)! }
    let fields = (0..<10).map { "f\($0)" }
    let day: Int64 = 86_400_000
    let start: Int64 = 1_749_945_600_000  // 2025-06-15T00:00:00Z
    // Fill: 8,640 records per cpu, 10 fields each.
    let encoder = BatchEncoder(config: config, routes: [Route(key: config.key, maxlen: 0)], minter: try StreamIDMinter(path: nil))
    let writer = RedisWriter(connection: RedisConnection(options: RedisConnectionOptions(config)), encoder: encoder, logger: Logger(label: "bench"))
    var batch: [QueuedRecord] = []
    let fillStart = monotonicNanoseconds()
    for i in 0..<8640 {
        let ms = start + Int64(i) * 10_000
        for cpu in 0..<10 {
            let fieldsOfRecord = fields.enumerated().map { Field($1, .double(Double((i * 7 + cpu * 3 + $0) % 1000) / 10)) }
            batch.append(QueuedRecord(record: Record(name: "cpu", tags: [Tag("cpu", "cpu\(cpu)"), Tag("host", "bench-host")], fields: fieldsOfRecord,
                                                     timestamp: ms * 1_000_000), route: 0))
        }
        if batch.count >= 1000 || i == 8639 {
            var p = PendingBatch(try writer.encode(batch, now: wallClockNanoseconds()))
            var settled = false
            for _ in 0..<5 where !settled { settled = writer.attempt(&p).1 == nil }
            guard settled else { throw InputError("could not write the query bench's data") }
            batch.removeAll(keepingCapacity: true)
        }
    }
    print(String(format: "query: a day of 10 s samples for 100 series (864,000 samples; rollups avg:5m, avg:1h) written in %.1f s; %d rounds",
                 Double(monotonicNanoseconds() - fillStart) / 1e9, rounds))
    let engine = QueryEngine(redis: config, layout: QueryLayout(redis: config, inputKeys: []), limits: QueryLimits())
    let plain = RedisConnection(options: RedisConnectionOptions(config))
    let keys = try plain.command(["TS.QUERYINDEX", "name=cpu", "rollup="]).array!.compactMap(\.string)
    guard keys.count == 100 else { throw InputError("expected 100 series, found \(keys.count)") }
    let now = start + day

    /// Milliseconds `body` takes, best of 3 (a round's figure).
    func time(_ body: () throws -> Int) throws -> (ms: Double, points: Int) {
        var best = Double.infinity
        var points = 0
        for _ in 0..<3 {
            let t0 = monotonicNanoseconds()
            points = try body()
            best = min(best, Double(monotonicNanoseconds() - t0) / 1e6)
        }
        return (best, points)
    }
    func reference(_ commands: [[String]]) throws -> Int {
        let (replies, error) = plain.pipeline(commands.map { RedisCommand($0) })
        if let error { throw error }
        return replies.reduce(0) { $0 + ($1.array?.count ?? 0) }
    }
    let from = String(start), to = String(start + day - 1)
    var lines: [String: [(Double, Double, Int)]] = [:]
    for _ in 1...rounds {
        // From the avg_5m rollup: 288 points per series.
        let rollup = try time { try engine.range(RangeQuery(selector: Selector(name: "cpu"), from: start, to: start + day - 1, step: 300_000, aggregation: .avg), now: now).series.reduce(0) { $0 + $1.points.count } }
        let rollupRef = try time { try reference(keys.map { ["TS.RANGE", $0 + ":avg_5m", from, to, "LATEST", "AGGREGATION", "avg", "300000"] }) }
        lines["from the avg_5m rollup, step 5m", default: []].append((rollup.ms, rollupRef.ms, rollup.points))
        // From the raw series (no max rollup): 8,640 samples per series aggregated by Redis.
        let raw = try time { try engine.range(RangeQuery(selector: Selector(name: "cpu"), from: start, to: start + day - 1, step: 300_000, aggregation: .max), now: now).series.reduce(0) { $0 + $1.points.count } }
        let rawRef = try time { try reference(keys.map { ["TS.RANGE", $0, from, to, "LATEST", "AGGREGATION", "max", "300000"] }) }
        lines["from the raw series (max), step 5m", default: []].append((raw.ms, rawRef.ms, raw.points))
        // serve: query_range avg_over_time over 10 series (one field), the window as long as the step.
        let api = PrometheusAPI()
        let served = try time {
            let r = api.handle(path: "/api/v1/query_range", parameters: [("query", "avg_over_time(cpu_f3[5m])"), ("start", String((start + 300_000) / 1000)),
                                                                          ("end", String((start + day) / 1000)), ("step", "300")],
                               now: now, source: PrometheusSource(engine: engine, now: now, maxSamples: 20_000_000))
            guard r.status == 200 else { throw InputError("serve answered \(r.status): \(r.text)") }
            return r.body.count
        }
        let servedKeys = keys.filter { $0.contains(":f3:") }
        let servedRef = try time { try reference(servedKeys.map { ["TS.RANGE", $0, String(start + 1), String(start + day), "LATEST", "ALIGN", "1", "AGGREGATION", "avg", "300000"] }) }
        lines["serve query_range avg_over_time(cpu_f3[5m]), 10 series", default: []].append((served.ms, servedRef.ms, 10 * 288))
    }
    for (name, figures) in lines.sorted(by: { $0.key < $1.key }) {
        let ours = median(figures.map(\.0)), ref = median(figures.map(\.1))
        print(String(format: "  %@: %.1f ms (%d points); the same TS.RANGE commands from a plain client %.1f ms; ratio %.2f",
                     name, ours, figures[0].2, ref, ref / ours))
    }
}

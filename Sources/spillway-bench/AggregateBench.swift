import Foundation
import Logging
import RedisSink
import SpillwayAggregate
import SpillwayBatch
import SpillwayConfig
import SpillwayCore
import SpillwayTestSupport

/// `BENCH_ONLY=aggregate`: the aggregator's entries/s next to XREADGROUP's own rate, on the same
/// stream of the same redis-stack server, in the same run.
func aggregateBenchmark(entries: Int, rounds: Int) throws {
    let key = "metrics:bench-host:cpu"
    print("aggregate: \(entries) cpu entries (11 fields, tag sets cpu0…cpu63) in one stream, COUNT 1000, buckets 1m and 1h, redis-stack (RedisTimeSeries)")
    print("  reference: a plain client's XREADGROUP … COUNT 1000 loop over the same stream (RedisConnection, replies parsed alike), alone and with XACK")
    var liveRatios: [Double] = [], backlogRatios: [Double] = []
    for round in 1...rounds {
        let server = try RedisServer(stack: true)
        defer { server.stop(); server.removeFiles() }
        let redis = try benchRedis(server)
        // Live: entries from now on (their buckets open while they are read): read, folded,
        // committed (partials + XACK) until every entry is acknowledged.
        let nowMs = wallClockNanoseconds() / 1_000_000
        try fill(server, entries: entries, firstMs: nowMs)
        let xreadgroup = try referenceRead(redis, key: key, group: "ref", entries: entries, ack: false)
        let withAck = try referenceRead(redis, key: key, group: "ref-ack", entries: entries, ack: true)
        try server.cli(["CONFIG", "RESETSTAT"])
        let live = try aggregate(redis, entries: entries, untilWritten: false)
        let stats = try commandMicroseconds(server)
        // Backlog: the same entries two days old (every bucket closed): read to written, each
        // bucket's figures written once its entries stop coming (settle = grace = 1s, included).
        try server.cli(["FLUSHALL"])
        try fill(server, entries: entries, firstMs: nowMs - 2 * 86_400_000)
        let xreadgroup2 = try referenceRead(redis, key: key, group: "ref", entries: entries, ack: false)
        let backlog = try aggregate(redis, entries: entries, untilWritten: true)
        liveRatios.append(live.rate / xreadgroup)
        backlogRatios.append(backlog.rate / xreadgroup2)
        print("  round \(round):")
        print(String(format: "    XREADGROUP alone (reference)  %9.0f entries/s", xreadgroup))
        print(String(format: "    XREADGROUP + XACK             %9.0f entries/s", withAck))
        print(String(format: "    aggregate, live               %9.0f entries/s read, folded, committed   ratio %.2fx XREADGROUP", live.rate, live.rate / xreadgroup))
        print(String(format: "      (Redis's time per entry in the live run: XREADGROUP %.2f µs, the commit script %.2f µs; the worker's rounds %.2f µs of wall time)",
                     stats["xreadgroup", default: 0] / Double(entries), stats["eval", default: 0] / Double(entries), 1e6 / live.rate))
        print(String(format: "    aggregate, backlog            %9.0f entries/s read to written (%d buckets, %d samples)   ratio %.2fx XREADGROUP (%.0f/s)",
                     backlog.rate, backlog.counters.finalized, backlog.counters.samples, backlog.rate / xreadgroup2, xreadgroup2))
    }
    func median(_ a: [Double]) -> Double { a.sorted()[a.count / 2] }
    print(String(format: "  median ratio to XREADGROUP over %d round(s): live %.2fx, backlog %.2fx", rounds, median(liveRatios), median(backlogRatios)))
}

private func benchRedis(_ server: RedisServer) throws -> RedisOutputConfig {
    var redis = RedisOutputConfig()
    redis.endpoint = try RedisEndpoint.parse(server.url)
    redis.timeout = 30_000_000_000
    return redis
}

private func fill(_ server: RedisServer, entries: Int, firstMs: Int64) throws {
    let pipeFile = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-agg-bench-\(getpid()).resp").path
    defer { try? FileManager.default.removeItem(atPath: pipeFile) }
    try writePipeFile(pipeFile, records: entries, firstMs: firstMs, maxlen: max(100_000, entries))
    _ = try redisCLIPipe(port: server.port, path: pipeFile, commands: entries)
}

/// XREADGROUP COUNT 1000 until every entry is read (and each page acknowledged, with `ack`):
/// entries/s.
private func referenceRead(_ redis: RedisOutputConfig, key: String, group: String, entries: Int, ack: Bool) throws -> Double {
    let c = RedisConnection(options: RedisConnectionOptions(endpoint: redis.endpoint))
    _ = try c.command(["XGROUP", "CREATE", key, group, "0"])
    var read = 0
    let start = monotonicNanoseconds()
    for _ in 0..<(entries / 1000 + 10) {
        let reply = try c.command(["XREADGROUP", "GROUP", group, "c", "COUNT", "1000", "STREAMS", key, ">"])
        guard case .array(let streams) = reply, case .array(let pair)? = streams.first, pair.count == 2, case .array(let list) = pair[1], !list.isEmpty else { break }
        read += list.count
        if ack {
            var x = RedisCommand(["XACK", key, group])
            for e in list { if case .array(let p) = e, let id = p.first?.string { x.append(id) } }
            let (r, error) = c.pipeline([x])
            if let error { throw error }
            guard case .integer = r[0] else { throw InputError("XACK: \(r[0])") }
        }
    }
    let seconds = Double(monotonicNanoseconds() - start) / 1e9
    guard read == entries else { throw InputError("the reference read \(read) of \(entries) entries") }
    return Double(entries) / seconds
}

/// One worker (defaults, grace 1s) until every entry is committed (and, `untilWritten`, every
/// bucket written): entries/s and its counters.
private func aggregate(_ redis: RedisOutputConfig, entries: Int, untilWritten: Bool) throws -> (rate: Double, counters: AggregateCounters) {
    var config = AggregateConfig(consumer: "bench")
    config.graceMs = 1000
    config.pollIntervalMs = 20
    var logger = Logger(label: "bench")
    logger.logLevel = .error
    let worker = AggregateWorker(config: config, redis: redis, logger: logger, stop: StopSignal())
    let start = monotonicNanoseconds()
    let deadline = start + 600_000_000_000
    while monotonicNanoseconds() < deadline {
        let busy = try worker.round()
        let c = worker.counters
        if c.committed >= entries, !untilWritten || (c.openBuckets == 0 && !busy && c.finalized > 0) { break }
        if !busy { usleep(20_000) }
    }
    let seconds = Double(monotonicNanoseconds() - start) / 1e9
    let c = worker.counters
    guard c.committed == entries else { throw InputError("aggregate committed \(c.committed) of \(entries) entries: \(c)") }
    return (Double(entries) / seconds, c)
}

/// INFO commandstats: microseconds spent per command (lower case), since the last CONFIG RESETSTAT.
private func commandMicroseconds(_ server: RedisServer) throws -> [String: Double] {
    var out: [String: Double] = [:]
    for line in try server.cli(["INFO", "commandstats"]).split(whereSeparator: \.isNewline) where line.hasPrefix("cmdstat_") {
        let name = line.dropFirst("cmdstat_".count).prefix { $0 != ":" }
        guard let r = line.range(of: "usec="), let usec = Double(line[r.upperBound...].prefix { $0 != "," }) else { continue }
        out[String(name)] = usec
    }
    return out
}

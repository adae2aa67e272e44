import Foundation
import Logging
import RedisSink
@testable import SpillwayAggregate
import SpillwayBatch
import SpillwayConfig
import SpillwayCore
import SpillwayTestSupport
import Testing

// MARK: - Helpers

/// Writes records as the agent does (its encoder, explicit IDs) into the Redis at `port`.
func writeRecords(port: Int, _ records: [Record]) throws {
    var config = RedisOutputConfig()
    config.endpoint = try RedisEndpoint.parse("redis://127.0.0.1:\(port)/0")
    var options = RedisConnectionOptions(endpoint: config.endpoint)
    options.connectTimeout = 1_000_000_000
    let encoder = BatchEncoder(config: config, routes: [Route(key: config.key, maxlen: 0)], minter: try StreamIDMinter(path: nil))
    let writer = RedisWriter(connection: RedisConnection(options: options), encoder: encoder, logger: Logger(label: "test"))
    for chunk in stride(from: 0, to: records.count, by: 500) {
        let batch = try writer.encode(records[chunk..<min(records.count, chunk + 500)].map { QueuedRecord(record: $0, route: 0) }, now: wallClockNanoseconds())
        var pending = PendingBatch(batch)
        var settled = false
        for _ in 0..<5 {
            let (_, error) = writer.attempt(&pending)
            if error == nil { settled = true; break }
        }
        #expect(settled, "records not written")
    }
}

/// Records of two hosts: cpu (three tag sets, a string and a boolean field besides the numbers) and
/// mem, every `stepMs` from `startMs`, `perSeries` each. Values are multiples of 1/8 (sums exact in
/// any order) unless `dyadic` is false.
func sampleRecords(startMs: Int64, stepMs: Int64, perSeries: Int, hosts: [String] = ["web-1", "web-2"], dyadic: Bool = true, seed: UInt64 = 1) -> [Record] {
    var rng = SplitMix(seed: seed)
    func value() -> Double {
        dyadic ? Double(Int(rng.next() % 8000) - 1000) / 8 : Double(rng.next() % 1_000_000) / 7.3 - 20_000
    }
    var out: [Record] = []
    for i in 0..<perSeries {
        let t = (startMs + Int64(i) * stepMs) * 1_000_000 + 123_456
        for host in hosts {
            for cpu in ["cpu-total", "cpu0", "cpu1"] {
                out.append(Record(name: "cpu", tags: [Tag("host", host), Tag("cpu", cpu), Tag("dc", "eu-1")],
                                  fields: [Field("usage_user", .double(value())), Field("usage_idle", .double(value())),
                                           Field("state", .string("ok")), Field("online", .bool(true)), Field("ticks", .int(Int64(rng.next() % 100)))],
                                  timestamp: t))
            }
            out.append(Record(name: "mem", tags: [Tag("host", host)],
                              fields: [Field("used", .uint(rng.next() % 1_000_000)), Field("used_percent", .double(value()))], timestamp: t))
        }
    }
    return out
}

struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func aggregateConfig(port: Int, _ edit: (inout AggregateConfig) -> Void = { _ in }) throws -> (AggregateConfig, RedisOutputConfig) {
    var redis = RedisOutputConfig()
    redis.endpoint = try RedisEndpoint.parse("redis://127.0.0.1:\(port)/0")
    redis.connectTimeout = 500_000_000
    redis.timeout = 5_000_000_000
    var c = AggregateConfig(consumer: "w1")
    c.buckets = [AggregateConfig.Bucket(ms: 1000, text: "1s", retentionMs: 0), AggregateConfig.Bucket(ms: 10_000, text: "10s", retentionMs: 0)]
    c.graceMs = 500
    c.pollIntervalMs = 20
    c.claimIdleMs = 60_000
    edit(&c)
    return (c, redis)
}

let testBuckets: [(ms: Int64, text: String)] = [(1000, "1s"), (10_000, "10s")]

func makeWorker(_ c: AggregateConfig, _ redis: RedisOutputConfig, consumer: String? = nil, stop: StopSignal = StopSignal()) -> AggregateWorker {
    var logger = Logger(label: "aggregate-test")
    logger.logLevel = .warning
    return AggregateWorker(config: c, redis: redis, consumer: consumer, logger: logger, stop: stop)
}

/// Every entry of `streams` read by the group, none pending, no bucket waiting.
func settled(_ client: RESPClient, _ streams: [String], group: String = "spillway-aggregate") throws -> Bool {
    func fields(_ flat: [RESPValue]) -> [String: RESPValue] {
        var out: [String: RESPValue] = [:]
        for i in stride(from: 0, to: flat.count - 1, by: 2) { if let k = flat[i].string { out[k] = flat[i + 1] } }
        return out
    }
    for s in streams {
        let pending = try client.call(["XPENDING", s, group])
        guard pending.array?.first?.int == 0 else { return false }
        guard let groups = try client.call(["XINFO", "GROUPS", s]).array, let g = groups.first?.array,
              let top = fields(try client.call(["XINFO", "STREAM", s]).array ?? [])["last-generated-id"]?.string,
              fields(g)["last-delivered-id"]?.string == top else { return false }
    }
    return try client.call(["ZCARD", "spillway:agg:\(group):due"]).int == 0
}

/// Rounds of `workers` in turn until `settled` (at most `rounds` each and `seconds`); when no
/// worker had anything to do, a 10 ms wait (buckets close on Redis's clock).
func drive(_ workers: [AggregateWorker], _ client: RESPClient, _ streams: [String], rounds: Int = 5000, seconds: Double = 60,
           sourceLocation: SourceLocation = #_sourceLocation) throws {
    let deadline = Date().addingTimeInterval(seconds)
    for _ in 0..<rounds {
        var busy = false
        for w in workers {
            do throws(AggregateError) { busy = try w.round() || busy } catch { Issue.record("round failed: \(error)", sourceLocation: sourceLocation) ; return }
        }
        if !busy { usleep(10_000) }
        if try settled(client, streams) { return }
        guard Date() < deadline else { break }
    }
    Issue.record("not settled within \(rounds) rounds / \(seconds)s", sourceLocation: sourceLocation)
}

let allStreams = ["metrics:web-1:cpu", "metrics:web-1:mem", "metrics:web-2:cpu", "metrics:web-2:mem"]

func pastStart(_ seconds: Int64 = 60) -> Int64 { (wallClockNanoseconds() / 1_000_000 / 10_000 - seconds / 10) * 10_000 }

// MARK: - Tests

@Suite(.serialized) struct AggregateWorkerRuns {
    @Test func oneWorkerEqualsTheOfflineComputation() throws {
        let server = try RedisServer(stack: true)
        defer { server.stop(); server.removeFiles() }
        try writeRecords(port: server.port, sampleRecords(startMs: pastStart(), stepMs: 250, perSeries: 120))
        let (c, redis) = try aggregateConfig(port: server.port)
        let w = makeWorker(c, redis)
        let client = try RESPClient(port: server.port)
        try drive([w], client, allStreams)
        let offline = try OfflineAggregates(client: client, streams: allStreams, buckets: testBuckets)
        #expect(offline.entries == 120 * 8)
        // Two hosts: cpu (3 tag sets × 3 numeric fields) and mem (2): 22 series × 5 × 2 buckets.
        #expect(offline.expected.count == 220)
        #expect(try offline.differences(client: client, tolerance: 0) == [])
        #expect(w.counters.read == 960 && w.counters.committed == 960 && w.counters.fenced == 0)
        // The labels.
        let labels = try client.call(["TS.INFO", "agg:web-1:cpu:usage_user:avg:10s:cpu=cpu0:dc=eu-1"]).array ?? []
        let at = labels.firstIndex { $0.string == "labels" }.map { $0 + 1 }
        let pairs = (at.flatMap { labels[$0].array } ?? []).compactMap { $0.array.map { "\($0[0].string ?? "")=\($0[1].string ?? "")" } }
        #expect(pairs == ["name=cpu", "field=usage_user", "agg=avg", "bucket=10s", "bucket_ms=10000", "rollup=avg_10s", "spillway=aggregate",
                          "cpu=cpu0", "dc=eu-1", "host=web-1"])
        #expect(try client.call(["TS.QUERYINDEX", "name=mem", "agg=max", "bucket=1s"]).array?.compactMap(\.string).sorted()
                == ["agg:web-1:mem:used:max:1s", "agg:web-1:mem:used_percent:max:1s", "agg:web-2:mem:used:max:1s", "agg:web-2:mem:used_percent:max:1s"])
        // A written bucket's state stays `keep` (for late entries), then goes.
        let state = try client.call(["KEYS", "spillway:agg:spillway-aggregate:b:*"]).array ?? []
        #expect(!state.isEmpty)
        for k in state {
            let ttl = try client.call(["PTTL", k.string!]).int ?? -1
            let fields = try client.call(["HKEYS", k.string!])
            #expect(ttl > 0, "\(k): \(ttl) \(fields)")
        }
    }

    @Test func twoWorkersSplittingTheStreamsAgreeExactly() throws {
        let server = try RedisServer(stack: true)
        defer { server.stop(); server.removeFiles() }
        try writeRecords(port: server.port, sampleRecords(startMs: pastStart(), stepMs: 100, perSeries: 200, dyadic: false, seed: 7))
        // Seven entries a read: each bucket's entries are spread over both workers.
        let (c, redis) = try aggregateConfig(port: server.port) { $0.count = 7; $0.batch = 7 }
        let a = makeWorker(c, redis, consumer: "a"), b = makeWorker(c, redis, consumer: "b")
        let client = try RESPClient(port: server.port)
        try drive([a, b], client, allStreams)
        #expect(a.counters.read > 300 && b.counters.read > 300, "\(a.counters.read) / \(b.counters.read)")
        #expect(a.counters.read + b.counters.read == 1600)
        let offline = try OfflineAggregates(client: client, streams: allStreams, buckets: testBuckets)
        #expect(try offline.differences(client: client, tolerance: 1e-12) == [])
        // The sums are exact sums rounded once, whatever the split: the same as one worker's.
        let single = try RedisServer(stack: true)
        defer { single.stop(); single.removeFiles() }
        try writeRecords(port: single.port, sampleRecords(startMs: pastStart(), stepMs: 100, perSeries: 200, dyadic: false, seed: 7))
        let (c1, redis1) = try aggregateConfig(port: single.port)
        let one = makeWorker(c1, redis1)
        let client1 = try RESPClient(port: single.port)
        try drive([one], client1, allStreams)
        for key in ["agg:web-1:cpu:usage_user:sum:10s:cpu=cpu1:dc=eu-1", "agg:web-2:mem:used_percent:avg:1s"] {
            let x = try client.call(["TS.RANGE", key, "-", "+"]).array?.compactMap { $0.array?[1].string }
            let y = try client1.call(["TS.RANGE", key, "-", "+"]).array?.compactMap { $0.array?[1].string }
            #expect(x != nil && x == y)
        }
    }

    @Test func lateEntriesAreMergedIntoWrittenBuckets() throws {
        let server = try RedisServer(stack: true)
        defer { server.stop(); server.removeFiles() }
        let start = pastStart()
        try writeRecords(port: server.port, sampleRecords(startMs: start, stepMs: 500, perSeries: 40))
        let (c, redis) = try aggregateConfig(port: server.port)
        let w = makeWorker(c, redis)
        let client = try RESPClient(port: server.port)
        try drive([w], client, allStreams)
        let written = w.counters.finalized
        // (Buckets made after they closed were looked up in the timeseries once: none was there.)
        let lookups = w.counters.lookups
        // An entry added after its bucket was written (an ID above the stream's top, its time in
        // the first buckets: a record the agent sent again with a new ID).
        try client.call(["XADD", "metrics:web-1:mem", "*", "used", "1000000", "used_percent", "-500.5", "tag_host", "web-1", "timestamp", String(start + 250)])
        try drive([w], client, allStreams)
        #expect(w.counters.finalized == written + 2)
        #expect(w.counters.lookups == lookups)
        let offline = try OfflineAggregates(client: client, streams: allStreams, buckets: testBuckets)
        #expect(try offline.differences(client: client, tolerance: 0) == [])
        #expect(offline.expected["agg:web-1:mem:used_percent:min:1s"]?[start] == -500.5)
    }

    @Test func lateEntriesAfterTheStateExpiredAreMergedWithTheFiguresWritten() throws {
        let server = try RedisServer(stack: true)
        defer { server.stop(); server.removeFiles() }
        let start = pastStart()
        try writeRecords(port: server.port, sampleRecords(startMs: start, stepMs: 500, perSeries: 40))
        let (c, redis) = try aggregateConfig(port: server.port) { $0.keepMs = 0 }
        let w = makeWorker(c, redis)
        let client = try RESPClient(port: server.port)
        try drive([w], client, allStreams)
        #expect(try client.call(["KEYS", "spillway:agg:*:b:*"]).array == [])
        let before = w.counters.lookups
        try client.call(["XADD", "metrics:web-2:cpu", "*", "usage_user", "1234.125", "usage_idle", "-3", "ticks", "7",
                         "tag_cpu", "cpu0", "tag_dc", "eu-1", "tag_host", "web-2", "timestamp", String(start + 1750)])
        try drive([w], client, allStreams)
        #expect(w.counters.lookups == before + 2)
        let offline = try OfflineAggregates(client: client, streams: allStreams, buckets: testBuckets)
        #expect(try offline.differences(client: client, tolerance: 0) == [])
        #expect(offline.expected["agg:web-2:cpu:usage_user:max:1s:cpu=cpu0:dc=eu-1"]?[start + 1000] == 1234.125)
    }

    /// A worker keeps one field per bucket, rewritten at each commit; when the bucket's fields were
    /// merged away meanwhile (another worker wrote the bucket), its commit is refused (STALE) and
    /// made again with its figures started afresh.
    @Test func aFieldMergedAwayIsStartedAfresh() throws {
        let server = try RedisServer(stack: true)
        defer { server.stop(); server.removeFiles() }
        let t0 = (wallClockNanoseconds() / 1_000_000 / 1000 + 3) * 1000
        let streams = ["metrics:web-1:cpu", "metrics:web-1:mem"]
        try writeRecords(port: server.port, sampleRecords(startMs: t0, stepMs: 100, perSeries: 4, hosts: ["web-1"]))
        let (c, redis) = try aggregateConfig(port: server.port)
        let w = makeWorker(c, redis)
        let client = try RESPClient(port: server.port)
        for _ in 0..<5 { try w.round() }
        #expect(w.counters.committed == 16 && w.accs.count == 4 && w.accs.values.allSatisfy(\.written))
        // Each bucket's hash: one field of this worker. Remove it, as a finalizer merging it away
        // does (here its figures go nowhere, so that a second count of them would show).
        let hashes = (try client.call(["KEYS", "spillway:agg:*:b:*"]).array ?? []).compactMap(\.string)
        #expect(hashes.count == 4)
        for h in hashes {
            let fields = (try client.call(["HKEYS", h]).array ?? []).compactMap(\.string)
            #expect(fields.count == 1 && fields[0].hasPrefix("p:w1:"), "\(fields)")
            try client.call(["HDEL", h] + fields)
        }
        try writeRecords(port: server.port, sampleRecords(startMs: t0 + 400, stepMs: 100, perSeries: 2, hosts: ["web-1"], seed: 9))
        try w.round()
        #expect(w.counters.stale >= 1 && w.counters.committed == 24)
        for h in hashes { #expect((try client.call(["HLEN", h]).int ?? 0) == 1, "one new field per bucket") }
        try drive([w], client, streams)
        // The first commits' figures were removed above (not merged anywhere): the aggregates are those
        // of the later entries only, each counted once.
        let offline = try OfflineAggregates(client: client, streams: streams, buckets: testBuckets)
        let count = offline.expected["agg:web-1:mem:used:count:10s"]?.values.reduce(0, +)
        #expect(offline.entries == 24 && count == 6)
        // Written: only the later entries' figures (2 mem entries), not the first 4 again.
        let written = try client.call(["TS.RANGE", "agg:web-1:mem:used:count:10s", "-", "+"]).array?.compactMap { $0.array?[1].string.flatMap(Double.init) }
        #expect(written == [2], "\(String(describing: written))")
    }

    /// More open buckets than max_open_buckets: the worker lets go of the figures it holds of some
    /// (their next entries start new fields) and pauses reading while too many wait in Redis; the
    /// figures are still exact.
    @Test func lettingGoOfHeldBucketsKeepsTheFiguresExact() throws {
        let server = try RedisServer(stack: true)
        defer { server.stop(); server.removeFiles() }
        // Times just ahead: open buckets (1 s and 2 s).
        let t0 = wallClockNanoseconds() / 1_000_000 + 300
        try writeRecords(port: server.port, sampleRecords(startMs: t0, stepMs: 150, perSeries: 14, hosts: ["web-1"]))
        let streams = ["metrics:web-1:cpu", "metrics:web-1:mem"]
        let buckets = [AggregateConfig.Bucket(ms: 1000, text: "1s", retentionMs: 0), AggregateConfig.Bucket(ms: 2000, text: "2s", retentionMs: 0)]
        let (c, redis) = try aggregateConfig(port: server.port) { $0.maxOpenBuckets = 3; $0.count = 7; $0.batch = 7; $0.buckets = buckets }
        let w = makeWorker(c, redis)
        let client = try RESPClient(port: server.port)
        try drive([w], client, streams)
        // The round that wrote the last due buckets may have begun paused (it decides before it
        // writes): the next one, with none open, reads again.
        do throws(AggregateError) { _ = try w.round() } catch { Issue.record("round failed: \(error)") }
        #expect(w.counters.evicted > 0 && w.counters.paused == false && w.counters.openBuckets == 0)
        let offline = try OfflineAggregates(client: client, streams: streams, buckets: [(1000, "1s"), (2000, "2s")])
        #expect(offline.entries == 56)
        #expect(try offline.differences(client: client, tolerance: 0) == [])
    }

    /// Consumers gone for good are deleted from the group, but never one holding pending entries.
    @Test func idleConsumersWithoutPendingEntriesArePruned() throws {
        let server = try RedisServer(stack: true)
        defer { server.stop(); server.removeFiles() }
        try writeRecords(port: server.port, sampleRecords(startMs: pastStart(), stepMs: 500, perSeries: 4, hosts: ["web-1"]))
        let client = try RESPClient(port: server.port)
        try client.call(["XGROUP", "CREATE", "metrics:web-1:mem", "spillway-aggregate", "0"])
        try client.call(["XGROUP", "CREATECONSUMER", "metrics:web-1:mem", "spillway-aggregate", "ghost"])
        try client.call(["XREADGROUP", "GROUP", "spillway-aggregate", "holder", "COUNT", "1", "STREAMS", "metrics:web-1:mem", ">"])
        let (c, redis) = try aggregateConfig(port: server.port)
        let w = makeWorker(c, redis)
        w.pruneIdleMs = 0
        try w.scan()
        try w.prune()
        let names = (try client.call(["XINFO", "CONSUMERS", "metrics:web-1:mem", "spillway-aggregate"]).array ?? []).compactMap { $0.array?[1].string }
        #expect(names == ["holder"])
    }

    @Test func aCommitOfEntriesClaimedByAnotherWorkerIsFenced() throws {
        let server = try RedisServer(stack: true)
        defer { server.stop(); server.removeFiles() }
        try writeRecords(port: server.port, sampleRecords(startMs: pastStart(), stepMs: 500, perSeries: 20, hosts: ["web-1"]))
        let streams = ["metrics:web-1:cpu", "metrics:web-1:mem"]
        let (c, redis) = try aggregateConfig(port: server.port) { $0.claimIdleMs = 100 }
        let client = try RESPClient(port: server.port)
        // Worker a reads the mem entries and stalls before committing them.
        let a = makeWorker(c, redis, consumer: "a")
        try a.scan()
        a.reread.removeAll()
        let read = try client.call(["XREADGROUP", "GROUP", "spillway-aggregate", "a", "COUNT", "1000", "STREAMS", "metrics:web-1:mem", ">"])
        var held = AggregateWorker.Held()
        for e in read.array?.first?.array?[1].array ?? [] {
            a.fold(StreamEntry(reply: try #require(convert(e)))!, into: &held)
        }
        #expect(held.ids.count == 20)
        // Worker b claims them past claim_idle and commits them.
        usleep(200_000)
        let b = makeWorker(c, redis, consumer: "b")
        try drive([b], client, streams)
        #expect(b.counters.claimed == 20)
        // a's commit now is refused, writes nothing, and a reads its own pending entries (none) again.
        try a.commit(["metrics:web-1:mem": held])
        #expect(a.counters.fenced == 1 && a.counters.committed == 0)
        #expect(a.reread.contains("metrics:web-1:mem"))
        try drive([a, b], client, streams)
        let offline = try OfflineAggregates(client: client, streams: streams, buckets: testBuckets)
        #expect(try offline.differences(client: client, tolerance: 0) == [])
    }

    @Test func aWorkerRestartedWithItsNameReadsItsPendingEntriesAgain() throws {
        let server = try RedisServer(stack: true)
        defer { server.stop(); server.removeFiles() }
        try writeRecords(port: server.port, sampleRecords(startMs: pastStart(), stepMs: 500, perSeries: 20, hosts: ["web-1"]))
        let streams = ["metrics:web-1:cpu", "metrics:web-1:mem"]
        let (c, redis) = try aggregateConfig(port: server.port)
        let client = try RESPClient(port: server.port)
        // A worker "w" read entries and died before committing (one was trimmed meanwhile).
        for s in streams { try client.call(["XGROUP", "CREATE", s, "spillway-aggregate", "0"]) }
        let read = try client.call(["XREADGROUP", "GROUP", "spillway-aggregate", "w", "COUNT", "25", "STREAMS", "metrics:web-1:cpu", ">"])
        let ids = (read.array?.first?.array?[1].array ?? []).compactMap { $0.array?[0].string }
        #expect(ids.count == 25)
        try client.call(["XDEL", "metrics:web-1:cpu", ids[3]])
        let w = makeWorker(c, redis, consumer: "w")
        try drive([w], client, streams)
        #expect(w.counters.reread == 25 && w.counters.deleted == 1 && w.counters.claimed == 0)
        let offline = try OfflineAggregates(client: client, streams: streams, buckets: testBuckets)
        #expect(offline.entries == 79)
        #expect(try offline.differences(client: client, tolerance: 0) == [])
    }

    @Test func newStreamsAreFoundByTheNextScan() throws {
        let server = try RedisServer(stack: true)
        defer { server.stop(); server.removeFiles() }
        let start = pastStart()
        try writeRecords(port: server.port, sampleRecords(startMs: start, stepMs: 500, perSeries: 10, hosts: ["web-1"]))
        let (c, redis) = try aggregateConfig(port: server.port) { $0.scanIntervalMs = 100 }
        let w = makeWorker(c, redis)
        let client = try RESPClient(port: server.port)
        try drive([w], client, ["metrics:web-1:cpu", "metrics:web-1:mem"])
        #expect(w.counters.streams == 2)
        try writeRecords(port: server.port, sampleRecords(startMs: start, stepMs: 500, perSeries: 10, hosts: ["web-3"]))
        usleep(150_000)
        let streams = ["metrics:web-1:cpu", "metrics:web-1:mem", "metrics:web-3:cpu", "metrics:web-3:mem"]
        try drive([w], client, streams)
        #expect(w.counters.streams == 4)
        let offline = try OfflineAggregates(client: client, streams: streams, buckets: testBuckets)
        #expect(try offline.differences(client: client, tolerance: 0) == [])
        // A stream deleted is forgotten at the next scan.
        try client.call(["DEL", "metrics:web-3:mem"])
        usleep(150_000)
        try w.round()
        #expect(w.counters.streams == 3)
    }

    @Test func redisDownAtTheStartIsRetriedAndTheRunCompletes() throws {
        let port = try RedisServer.freePort()
        let (c, redis) = try aggregateConfig(port: port)
        let stop = StopSignal()
        let w = makeWorker(c, redis, stop: stop)
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) let worker = w
        Thread {
            do throws(AggregateError) { try worker.run() } catch { Issue.record("run threw \(error)") }
            done.signal()
        }.start()
        usleep(1_200_000)
        let server = try RedisServer(stack: true, port: port)
        defer { server.stop(); server.removeFiles() }
        try writeRecords(port: server.port, sampleRecords(startMs: pastStart(), stepMs: 500, perSeries: 20))
        let client = try RESPClient(port: server.port)
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline, !(try settled(client, allStreams)) { usleep(100_000) }
        stop.stop()
        #expect(done.wait(timeout: .now() + 10) == .success, "the worker did not stop")
        #expect(w.counters.errors > 0)
        let offline = try OfflineAggregates(client: client, streams: allStreams, buckets: testBuckets)
        #expect(offline.entries == 160)
        #expect(try offline.differences(client: client, tolerance: 0) == [])
    }

    @Test func aRedisWithoutTimeSeriesStopsTheWorkerWithAClearError() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        let (c, redis) = try aggregateConfig(port: server.port)
        let w = makeWorker(c, redis)
        do throws(AggregateError) {
            try w.run()
            Issue.record("run returned")
        } catch {
            guard case .fatal(let m) = error else { Issue.record("\(error)"); return }
            #expect(m.contains("has no RedisTimeSeries (TS.ADD is unknown)"))
        }
    }

    @Test func readingPausesAtMaxOpenBuckets() throws {
        let server = try RedisServer(stack: true)
        defer { server.stop(); server.removeFiles() }
        // Records an hour ahead: their buckets stay open.
        let future = wallClockNanoseconds() / 1_000_000 + 3_600_000
        try writeRecords(port: server.port, sampleRecords(startMs: future, stepMs: 500, perSeries: 2, hosts: ["web-1"]))
        let (c, redis) = try aggregateConfig(port: server.port) { $0.maxOpenBuckets = 2; $0.count = 2; $0.batch = 2 }
        let w = makeWorker(c, redis)
        // Two entries of one time: a 1s and a 10s bucket open.
        try w.round()
        #expect(w.counters.read == 2 && w.counters.openBuckets == 0 && !w.counters.paused)
        try w.round()
        #expect(w.counters.openBuckets == 2 && w.counters.paused)
        let read = w.counters.read
        for _ in 0..<3 { try w.round() }
        #expect(w.counters.read == read && w.counters.paused)
    }
}

/// A test client's reply as the agent's reply type (to parse it with `StreamEntry`).
func convert(_ v: RESPValue) -> RedisReply? {
    switch v {
    case .simple(let s): .status(s)
    case .error(let s): .error(s)
    case .integer(let i): .integer(i)
    case .bulk(let s): .bulk(Array(s.utf8))
    case .null: .null
    case .array(let a): .array(a.compactMap(convert))
    }
}

import Foundation
import SpillwayTestSupport
import Testing

/// A `spillway aggregate` process, stopped by PID.
final class AggregateProcess {
    let config: URL
    let log: URL
    let consumer: String
    var process: Process?

    init(config: URL, consumer: String, log: URL) {
        self.config = config
        self.consumer = consumer
        self.log = log
    }

    func start() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: spillwayBin)
        p.arguments = ["aggregate", "--config", config.path, "--consumer", consumer]
        if !FileManager.default.fileExists(atPath: log.path) { _ = FileManager.default.createFile(atPath: log.path, contents: nil) }
        let handle = try FileHandle(forWritingTo: log)
        handle.seekToEndOfFile()
        p.standardError = handle
        p.standardOutput = handle
        try p.run()
        process = p
    }

    var pid: Int32 { process?.processIdentifier ?? 0 }

    /// SIGTERM, and wait (at most 15 s) for the exit; its status.
    @discardableResult
    func stop() -> Int32 {
        guard let p = process else { return -1 }
        kill(p.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(15)
        while p.isRunning, Date() < deadline { usleep(20_000) }
        if p.isRunning {
            kill(p.processIdentifier, SIGKILL)
            Issue.record("aggregate \(consumer) did not stop within 15 s of SIGTERM")
        }
        p.waitUntilExit()
        process = nil
        return p.terminationStatus
    }

    func sigkill() {
        guard let p = process else { return }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        process = nil
    }

    var logText: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

    /// A counter of the last `aggregate worker stopped` line (-1 when there is none).
    func counter(_ name: String) -> Int {
        guard let line = logText.split(separator: "\n").last(where: { $0.contains("aggregate worker stopped") }),
              let r = line.range(of: "aggregate.\(name)=") else { return -1 }
        return Int(line[r.upperBound...].prefix { $0.isNumber }) ?? -1
    }

    deinit {
        if let p = process, p.isRunning { kill(p.processIdentifier, SIGKILL) }
    }
}

/// The metrics streams in Redis.
func metricStreams(_ client: RESPClient) throws -> [String] {
    var cursor = "0", keys: [String] = []
    for _ in 0..<10_000 {
        let r = try client.call(["SCAN", cursor, "MATCH", "metrics:*", "COUNT", "1000", "TYPE", "stream"]).array ?? []
        guard r.count == 2 else { break }
        cursor = r[0].string ?? "0"
        keys += (r[1].array ?? []).compactMap(\.string)
        if cursor == "0" { break }
    }
    return keys.sorted()
}

/// Entries pending with `consumer` in the group, over `streams`.
func pendingWith(_ client: RESPClient, _ streams: [String], _ consumer: String, group: String = "spillway-aggregate") throws -> Int {
    var n = 0
    for s in streams {
        let summary = try client.call(["XPENDING", s, group]).array ?? []
        guard summary.count == 4, let consumers = summary[3].array else { continue }
        for c in consumers {
            if let pair = c.array, pair.count == 2, pair[0].string == consumer { n += Int(pair[1].int ?? 0) }
        }
    }
    return n
}

/// Every entry read by the group, none pending, no bucket waiting.
func aggregatesSettled(_ client: RESPClient, _ streams: [String], group: String = "spillway-aggregate") throws -> Bool {
    func fields(_ flat: [RESPValue]) -> [String: RESPValue] {
        var out: [String: RESPValue] = [:]
        for i in stride(from: 0, to: flat.count - 1, by: 2) { if let k = flat[i].string { out[k] = flat[i + 1] } }
        return out
    }
    for s in streams {
        guard try client.call(["XPENDING", s, group]).array?.first?.int == 0 else { return false }
        guard let g = try client.call(["XINFO", "GROUPS", s]).array?.first?.array,
              let top = fields(try client.call(["XINFO", "STREAM", s]).array ?? [])["last-generated-id"]?.string,
              fields(g)["last-delivered-id"]?.string == top else { return false }
    }
    return try client.call(["ZCARD", "spillway:agg:\(group):due"]).int == 0
}

@Suite(.serialized) struct AggregateCommand {
    /// Freezes `worker` at a moment it holds entries it read and has not committed (pending with
    /// it), then kills it with -9. Returns how many it held (0 when no such moment came in time).
    func killHoldingPending(_ worker: AggregateProcess, _ client: RESPClient) throws -> Int {
        for _ in 0..<400 {
            let streams = try metricStreams(client)
            kill(worker.pid, SIGSTOP)
            // Commands it sent before it froze still run (a commit on the wire acknowledges its
            // entries): look once Redis has had them (the same count twice, 100 ms apart).
            var held = try pendingWith(client, streams, worker.consumer)
            for _ in 0..<20 {
                usleep(100_000)
                let again = try pendingWith(client, streams, worker.consumer)
                if again == held { break }
                held = again
            }
            if held > 0 {
                worker.sigkill()
                return held
            }
            kill(worker.pid, SIGCONT)
            usleep(UInt32.random(in: 2_000...15_000))
        }
        worker.sigkill()
        return 0
    }

    /// The agent writes its records (cpu per CPU, mem, system, net, diskio every 100 ms) while two
    /// workers aggregate them into 1s and 5s buckets; one is killed with -9 while it holds entries
    /// and restarted under its name (it reads them again), the other killed the same way and
    /// replaced by a worker of another name (its entries are claimed past claim_idle). Afterwards
    /// no entry is pending and every aggregate equals the offline computation over XRANGE.
    @Test func twoWorkersOneKilledAndRestartedEqualTheOfflineComputation() throws {
        let server = try RedisServer(stack: true)
        defer { server.stop(); server.removeFiles() }
        let agent = try AgentProcess(redisPort: server.port, inputs: "[[inputs.cpu]]\n[[inputs.mem]]\n[[inputs.system]]\n[[inputs.net]]\n[[inputs.diskio]]")
        let config = agent.dir.appendingPathComponent("aggregate.toml")
        try """
            [agent]
            hostname = "aggregator"
            [outputs.redis]
            url = "redis://127.0.0.1:\(server.port)/0"
            connect_timeout = "500ms"
            timeout = "3s"
            [aggregate]
            buckets = ["1s", "5s"]
            grace = "1s"
            claim_idle = "2s"
            count = 20
            batch = 40
            scan_interval = "300ms"
            poll_interval = "50ms"
            """.write(to: config, atomically: true, encoding: .utf8)
        let a = AggregateProcess(config: config, consumer: "a", log: agent.dir.appendingPathComponent("a.log"))
        let b = AggregateProcess(config: config, consumer: "b", log: agent.dir.appendingPathComponent("b.log"))
        let b2 = AggregateProcess(config: config, consumer: "b2", log: agent.dir.appendingPathComponent("b2.log"))
        try agent.start()
        try a.start()
        try b.start()
        let client = try RESPClient(port: server.port)
        usleep(3_000_000)
        let heldByA = try killHoldingPending(a, client)
        usleep(500_000)
        try a.start()
        usleep(2_000_000)
        let heldByB = try killHoldingPending(b, client)
        try b2.start()
        usleep(3_000_000)
        #expect(agent.stop() == 0)
        let streams = try metricStreams(client)
        #expect(streams.count >= 5, "\(streams)")
        let deadline = Date().addingTimeInterval(60)
        var done = false
        while Date() < deadline {
            if try aggregatesSettled(client, streams) { done = true; break }
            usleep(200_000)
        }
        #expect(done, "the workers did not finish within 60 s")
        #expect(a.stop() == 0)
        #expect(b2.stop() == 0)
        // Killed while holding entries, and those entries were read again (a) or claimed (b2).
        #expect(heldByA > 0 && heldByB > 0, "a held \(heldByA), b held \(heldByB)")
        #expect(a.counter("reread") >= heldByA, "\(a.logText.suffix(2000))")
        #expect(a.counter("claimed") + b2.counter("claimed") >= heldByB, "\(b2.logText.suffix(2000))")
        for w in [a, b, b2] {
            #expect(!w.logText.contains("Fatal error") && !w.logText.contains("round failed"), "\(w.consumer): \(w.logText.suffix(3000))")
        }
        // Nothing pending, and every aggregate is the offline figure.
        for s in streams { #expect(try client.call(["XPENDING", s, "spillway-aggregate"]).array?.first?.int == 0) }
        let offline = try OfflineAggregates(client: client, streams: streams, buckets: [(1000, "1s"), (5000, "5s")])
        print("aggregate kill test: \(offline.entries) entries in \(streams.count) streams, \(offline.expected.count) aggregate series; a held \(heldByA) when killed and read \(a.counter("reread")) again; b held \(heldByB), claimed \(a.counter("claimed") + b2.counter("claimed")); fenced \(a.counter("fenced") + b2.counter("fenced"))")
        #expect(offline.entries > 500, "\(offline.entries) entries")
        #expect(try offline.differences(client: client, tolerance: 1e-9) == [])

        // `query range` with this [aggregate]: the settled buckets from the aggregates, the same
        // figures as the streams alone (`--where rollup=`; mem's used is whole bytes, so sums and
        // averages are exact either way).
        func range(_ agg: String, _ extra: [String]) throws -> [[String: Any]] {
            let r = try spillway(["query", "range", "mem", "--field", "used", "--from", "-10m", "--step", "5s", "--agg", agg, "--json", "--config", config.path] + extra)
            #expect(r.status == 0, "\(r.stderr)")
            return (try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])?["series"] as? [[String: Any]] ?? []
        }
        for agg in ["avg", "max", "count"] {
            let mixed = try range(agg, []), streamsAlone = try range(agg, ["--where", "rollup="])
            #expect(!mixed.isEmpty && mixed.count == streamsAlone.count)
            for (m, s) in zip(mixed, streamsAlone) {
                #expect((m["points"] as? [[Double]]) == (s["points"] as? [[Double]]), "\(agg): \(m) \(s)")
                #expect(m["rollup"] as? String == (agg == "avg" ? "sum_5s+count_5s" : "\(agg)_5s") && m["stream_from"] is NSNumber, "\(m)")
                #expect(s["rollup"] is NSNull && s["stream_from"] is NSNull, "\(s)")
                // Most of the run is settled: more points from the aggregates than from the stream.
                let cut = (m["stream_from"] as? NSNumber)?.doubleValue ?? 0
                let points = m["points"] as? [[Double]] ?? []
                #expect(points.filter { $0[0] < cut }.count > points.filter { $0[0] >= cut }.count, "\(m)")
            }
        }
    }

    @Test func checkShowsTheAggregateSettings() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-agg-check-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("agent.toml").path
        try "[agent]\nhostname = \"h1\"\ndata_dir = \"\(dir.path)/data\"\n[[inputs.mem]]\n[aggregate]\nbuckets = [\"1m\", \"5m:1d\"]\ngroup = \"g\"\n"
            .write(toFile: path, atomically: true, encoding: .utf8)
        let r = try spillway(["check", "--config", path])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("aggregate: streams=metrics:*:* stream_key=metrics:{host}:{name} buckets=1m,5m:24h grace=30s group=g consumer=h1 key=agg:{host}:{name}:{field}:{agg}:{bucket}"), "\(r.stdout)")
        // The worker refuses the same problems check reports, located.
        try "[aggregate]\nbuckets = [\"1m\", \"later\"]\n".write(toFile: path, atomically: true, encoding: .utf8)
        let bad = try spillway(["aggregate", "--config", path], timeout: 20)
        #expect(bad.status == 2)
        #expect(bad.stderr.contains("\(path):2: aggregate.buckets: \"later\" is not a bucket"), "\(bad.stderr)")
    }

    /// Redis down: one error line naming it (no password), retries, and SIGTERM stops at once.
    @Test func redisDownIsRetriedAndSIGTERMStopsCleanly() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-agg-down-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let port = try RedisServer.freePort()
        let config = dir.appendingPathComponent("agent.toml")
        try "[outputs.redis]\nurl = \"redis://worker:s3cret-pw@127.0.0.1:\(port)/0\"\nconnect_timeout = \"200ms\"\n[aggregate]\npoll_interval = \"50ms\"\n"
            .write(to: config, atomically: true, encoding: .utf8)
        let w = AggregateProcess(config: config, consumer: "w", log: dir.appendingPathComponent("w.log"))
        try w.start()
        usleep(2_000_000)
        let start = Date()
        #expect(w.stop() == 0)
        #expect(Date().timeIntervalSince(start) < 6)
        let text = w.logText
        #expect(text.contains("aggregate round failed; retrying") && text.contains("127.0.0.1:\(port)/0") && text.contains("Connection refused"), "\(text)")
        #expect(text.components(separatedBy: "aggregate round failed").count == 2, "one error line per episode: \(text)")
        #expect(!text.contains("s3cret-pw"))
        #expect(text.contains("aggregate worker stopped"))
    }

    @Test func aRedisWithoutTimeSeriesEndsWithOneLineAndExitOne() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-agg-nots-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("agent.toml").path
        try "[outputs.redis]\nurl = \"redis://127.0.0.1:\(server.port)/0\"\n".write(toFile: path, atomically: true, encoding: .utf8)
        let r = try spillway(["aggregate", "--config", path], timeout: 20)
        #expect(r.status == 1)
        #expect(r.stderr.contains("spillway: Redis at 127.0.0.1:\(server.port)/0 has no RedisTimeSeries (TS.ADD is unknown)"), "\(r.stderr)")
        #expect(!r.stderr.contains("Fatal error"))
    }
}

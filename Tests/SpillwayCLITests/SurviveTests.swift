import Foundation
import SpillwayTestSupport
import Testing

/// An agent process with its own config and data_dir, stopped by PID.
final class AgentProcess {
    let dir: URL
    var process: Process?
    var config: URL { dir.appendingPathComponent("agent.toml") }
    var log: URL { dir.appendingPathComponent("agent.log") }
    var dataDir: URL { dir.appendingPathComponent("data") }

    /// `internalRecords`: the agent's own records (`[agent] internal`), off here so that the scenarios
    /// count exactly their inputs' records (HealthMetrics tests them, outage included).
    /// `url` (default: redis://127.0.0.1:`redisPort`/0) and `redisExtra` go in `[outputs.redis]`.
    init(redisPort: Int, extra: String = "", inputs: String = "[[inputs.mem]]\n[[inputs.system]]", agentExtra: String = "",
         internalRecords: Bool = false, url: String? = nil, redisExtra: String = "") throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-survive-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try """
            [agent]
            hostname = "h"
            interval = "100ms"
            flush_interval = "100ms"
            data_dir = "\(dataDir.path)"
            \(internalRecords ? "" : "internal = false")
            \(agentExtra)
            [outputs.redis]
            url = "\(url ?? "redis://127.0.0.1:\(redisPort)/0")"
            connect_timeout = "200ms"
            timeout = "500ms"
            \(redisExtra)
            [breaker]
            failure_threshold = 2
            open_timeout = "200ms"
            max_open_timeout = "500ms"
            \(extra)
            \(inputs)
            """.write(to: config, atomically: true, encoding: .utf8)
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
    }

    func start() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: spillwayBin)
        p.arguments = ["run", "--config", config.path]
        let handle = try FileHandle(forWritingTo: log)
        handle.seekToEndOfFile()
        p.standardError = handle
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        process = p
    }

    /// SIGTERM, and wait (at most 15 s) for a clean exit; returns the exit status.
    @discardableResult
    func stop() -> Int32 {
        guard let p = process else { return -1 }
        kill(p.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(15)
        while p.isRunning, Date() < deadline { usleep(20_000) }
        if p.isRunning {
            kill(p.processIdentifier, SIGKILL)
            Issue.record("agent did not stop within 15 s of SIGTERM")
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

    func status() throws -> [String: Any] {
        let r = try spillway(["status", "--config", config.path, "--json"])
        guard r.status == 0, let doc = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] else {
            Issue.record("status --json failed: \(r.stderr)")
            return [:]
        }
        return doc
    }

    func check() throws -> (Int32, String) {
        let r = try spillway(["status", "--config", config.path, "--check"])
        return (r.status, r.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Polls status until `condition` holds (at most `seconds`).
    func waitFor(_ seconds: Double, _ condition: ([String: Any]) -> Bool) throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(seconds)
        var doc: [String: Any] = [:]
        while Date() < deadline {
            doc = try status()
            if condition(doc) { return doc }
            usleep(150_000)
        }
        return doc
    }

    var logText: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

    deinit {
        if let p = process, p.isRunning { kill(p.processIdentifier, SIGKILL) }
        try? FileManager.default.removeItem(at: dir)
    }
}

func value(_ doc: [String: Any], _ path: String) -> Any? {
    var cur: Any? = doc
    for part in path.split(separator: ".") { cur = (cur as? [String: Any])?[String(part)] }
    return cur
}

func number(_ doc: [String: Any], _ path: String) -> Int64 { (value(doc, path) as? NSNumber)?.int64Value ?? -1 }

/// Every entry's timestamp of `key`, checked strictly increasing (no duplicate, production order).
func assertExactlyOnceInOrder(_ server: RedisServer, _ key: String, gapFree: Bool, sourceLocation: SourceLocation = #_sourceLocation) throws -> Int {
    let ts = try streamTimestamps(server, key)
    let gaps = zip(ts, ts.dropFirst()).map { $1 - $0 }
    #expect(gaps.allSatisfy { $0 > 0 }, "duplicates or disorder in \(key): \(gaps)", sourceLocation: sourceLocation)
    if gapFree { #expect(gaps.allSatisfy { $0 == 100 }, "a record is missing in \(key): \(gaps)", sourceLocation: sourceLocation) }
    return ts.count
}

@Suite(.serialized) struct Survive {
    @Test func statusDuringAnOutageAndAfterRecovery() throws {
        let port = try RedisServer.freePort()
        let agent = try AgentProcess(redisPort: port, extra: "[status]\nwarn_records = 5\n")
        try agent.start()
        let outage = try agent.waitFor(20) { number($0, "backlog.records") > 10 && (value($0, "breaker.state") as? String) == "open" }
        #expect(value(outage, "breaker.state") as? String == "open")
        #expect(value(outage, "agent.running") as? Bool == true)
        #expect(number(outage, "counters.spilled") > 0 && number(outage, "counters.written") == 0)
        #expect((value(outage, "last_error.message") as? String)?.contains("Connection refused") == true)
        #expect(number(outage, "backlog.bytes") > 0 && (value(outage, "backlog.oldest_age_seconds") as? Double ?? -1) >= 0)
        #expect((value(outage, "top_keys") as? [[String: Any]])?.map { $0["key"] as? String ?? "" }.sorted() == ["metrics:h:mem", "metrics:h:system"])
        let (warn, line) = try agent.check()
        #expect(warn == 1 && line.hasPrefix("SPILLWAY WARNING - breaker open for ") && line.contains("; backlog "), "\(line)")
        let text = try spillway(["status", "--config", agent.config.path]).stdout
        let errorLine = text.split(separator: "\n").first { $0.hasPrefix("last error ") } ?? ""
        #expect(errorLine.contains("Connection refused") && errorLine.contains(" (at 20") && errorLine.contains(" s ago; failing since 20"), "\(text)")
        let server = try RedisServer(port: port)
        defer { server.stop(); server.removeFiles() }
        let after = try agent.waitFor(15) { number($0, "backlog.records") == 0 && (value($0, "breaker.state") as? String) == "closed" }
        #expect(value(after, "breaker.state") as? String == "closed" && number(after, "backlog.records") == 0)
        #expect(number(after, "counters.replayed") > 0)
        let (ok, okLine) = try agent.check()
        #expect(ok == 0 && okLine.hasPrefix("SPILLWAY OK - breaker closed, backlog 0 records"), "\(okLine)")
        #expect(agent.stop() == 0)
        let final = try agent.status()
        #expect(value(final, "agent.running") as? Bool == false)
        let n = try assertExactlyOnceInOrder(server, "metrics:h:mem", gapFree: true) + assertExactlyOnceInOrder(server, "metrics:h:system", gapFree: true)
        // The counters add up: collected = written + replayed + dropped + rejected + duplicates (+ still buffered).
        let collected = number(final, "counters.collected")
        let accounted = number(final, "counters.written") + number(final, "counters.replayed") + number(final, "counters.dropped")
            + number(final, "counters.rejected") + number(final, "counters.duplicates") + number(final, "backlog.records")
        #expect(collected == accounted, "\(final)")
        #expect(Int64(n + internalInRedis(server)) == number(final, "counters.written") + number(final, "counters.replayed"))
    }

    @Test func agentKilledWithABacklogReplaysItOnRestart() throws {
        let port = try RedisServer.freePort()
        let agent = try AgentProcess(redisPort: port)
        try agent.start()
        _ = try agent.waitFor(20) { number($0, "backlog.records") >= 20 }
        agent.sigkill()
        let left = try agent.status()
        let backlog = number(left, "backlog.records")
        #expect(backlog >= 20 && value(left, "agent.running") as? Bool == false)
        let server = try RedisServer(port: port)
        defer { server.stop(); server.removeFiles() }
        try agent.start()
        let done = try agent.waitFor(15) { number($0, "backlog.records") == 0 && number($0, "counters.replayed") >= backlog }
        #expect(number(done, "counters.replayed") >= backlog, "\(done)")
        #expect(agent.logText.contains("a backlog from an earlier run will be replayed"))
        #expect(agent.stop() == 0)
        // Everything committed to the buffer before the kill is there once, in order.
        let n = try assertExactlyOnceInOrder(server, "metrics:h:mem", gapFree: false)
        #expect(Int64(n) * 2 >= backlog)
    }

    @Test func corruptBufferIsMovedAsideAndTheAgentRuns() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        let agent = try AgentProcess(redisPort: server.port)
        try FileManager.default.createDirectory(at: agent.dataDir, withIntermediateDirectories: true)
        try Data(repeating: 0x5A, count: 4096).write(to: agent.dataDir.appendingPathComponent("buffer.sqlite"))
        try agent.start()
        // status reads the buffer too: wait until the agent has moved the bad one aside.
        let deadline = Date().addingTimeInterval(10)
        while !agent.logText.contains("the spill buffer could not be read; it was moved aside"), Date() < deadline { usleep(50_000) }
        #expect(agent.logText.contains("the spill buffer could not be read; it was moved aside"))
        _ = try agent.waitFor(20) { number($0, "counters.written") > 5 }
        #expect(agent.stop() == 0)
        let names = try FileManager.default.contentsOfDirectory(atPath: agent.dataDir.path)
        #expect(names.contains { $0.hasPrefix("buffer.sqlite.corrupt-") }, "\(names)")
        #expect(try assertExactlyOnceInOrder(server, "metrics:h:mem", gapFree: true) > 5)
    }

    @Test func oomTripsTheBreakerAndRaisingMaxmemoryDrains() throws {
        let server = try RedisServer(args: ["--maxmemory-policy", "noeviction"])
        defer { server.stop(); server.removeFiles() }
        let agent = try AgentProcess(redisPort: server.port)
        try agent.start()
        _ = try agent.waitFor(20) { number($0, "counters.written") > 5 }
        try server.cli(["CONFIG", "SET", "maxmemory", "1"])
        let tripped = try agent.waitFor(20) { (value($0, "breaker.state") as? String) == "open" && number($0, "backlog.records") > 5 }
        #expect(value(tripped, "breaker.state") as? String == "open")
        #expect((value(tripped, "last_error.message") as? String)?.hasPrefix("OOM") == true, "\(tripped)")
        try server.cli(["CONFIG", "SET", "maxmemory", "0"])
        let drained = try agent.waitFor(15) { number($0, "backlog.records") == 0 && (value($0, "breaker.state") as? String) == "closed" }
        #expect(number(drained, "backlog.records") == 0)
        #expect(agent.stop() == 0)
        // Raising maxmemory can land in the middle of a pipeline: its first XADDs refused (OOM), the
        // later ones taken. The refused records then land with new IDs after those (the documented
        // exception to order, docs/guarantees.md), and the writer counts them as `new_ids`. Nothing
        // is lost or doubled either way, and no other record is out of order.
        let newIDs = writerCounters(agent.logText)["new_ids"]
        #expect(newIDs != nil, "no final writer line in the log")
        var late = 0
        for key in ["metrics:h:mem", "metrics:h:system"] {
            let ts = try streamTimestamps(server, key)
            let sorted = ts.sorted()
            #expect(zip(sorted, sorted.dropFirst()).allSatisfy { $1 - $0 == 100 }, "a record is missing or doubled in \(key): \(ts)")
            var highest = Int64.min
            for t in ts {
                if t < highest { late += 1 } else { highest = t }
            }
        }
        #expect(late <= Int(newIDs ?? 0), "\(late) records out of order, \(newIDs ?? 0) given new IDs")
    }

    @Test func timeoutAfterSendIsReplayedWithNoDuplicate() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        let agent = try AgentProcess(redisPort: server.port)
        try agent.start()
        _ = try agent.waitFor(20) { number($0, "counters.written") > 10 }
        // Redis stops answering for 1.5 s: pipelines time out (500 ms) with their outcome unknown.
        #expect(try server.cli(["CLIENT", "PAUSE", "1500", "ALL"]) == "OK")
        usleep(1_600_000)
        let after = try agent.waitFor(15) { number($0, "backlog.records") == 0 && number($0, "counters.replayed") > 0 && (value($0, "breaker.state") as? String) == "closed" }
        #expect(number(after, "counters.replayed") > 0, "\(after)")
        #expect((value(after, "last_error.message") as? String)?.contains("timeout") == true, "\(after)")
        #expect(agent.stop() == 0)
        let final = try agent.status()
        let n = try assertExactlyOnceInOrder(server, "metrics:h:mem", gapFree: true) + assertExactlyOnceInOrder(server, "metrics:h:system", gapFree: true)
        // Entries: written or replayed, or already there when a resend found them (duplicates).
        #expect(Int64(n) == number(final, "counters.written") + number(final, "counters.replayed") + number(final, "counters.duplicates"), "\(final)")
        #expect(number(final, "counters.collected") == number(final, "counters.written") + number(final, "counters.replayed")
            + number(final, "counters.duplicates") + number(final, "counters.dropped") + number(final, "backlog.records"), "\(final)")
    }

    /// Write-ahead: a batch is in the buffer before it is sent, so `kill -9` loses at most what was
    /// being collected (the queue, one flush_interval) and the batch being encoded.
    @Test func sigkillLosesAtMostTheBatchBeingCollected() throws {
        let port = try RedisServer.freePort()
        let agent = try AgentProcess(redisPort: port)
        try agent.start()
        _ = try agent.waitFor(20) { number($0, "backlog.records") >= 30 }
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let killedAtMs = Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
        agent.sigkill()
        let server = try RedisServer(port: port)
        defer { server.stop(); server.removeFiles() }
        try agent.start()
        _ = try agent.waitFor(15) { number($0, "backlog.records") == 0 && number($0, "counters.replayed") > 0 }
        #expect(agent.stop() == 0)
        for key in ["metrics:h:mem", "metrics:h:system"] {
            let ts = try streamTimestamps(server, key)
            let before = ts.filter { $0 <= killedAtMs }
            guard let first = before.first else {
                Issue.record("\(key): nothing from before the kill")
                continue
            }
            let expected = (killedAtMs / 100 * 100 - first) / 100 + 1
            let missing = expected - Int64(before.count)
            #expect(missing >= 0 && missing <= 3, "\(key): \(missing) of \(expected) ticks before the kill are missing")
            #expect(zip(ts, ts.dropFirst()).allSatisfy { $1 > $0 }, "\(key): duplicates or disorder")
        }
    }

    /// A clean stop while Redis is down loses nothing: every record collected is in the buffer.
    @Test func sigtermDuringAnOutageKeepsEverything() throws {
        let port = try RedisServer.freePort()
        let agent = try AgentProcess(redisPort: port)
        try agent.start()
        _ = try agent.waitFor(20) { number($0, "backlog.records") >= 10 }
        #expect(agent.stop() == 0)
        let doc = try agent.status()
        #expect(number(doc, "counters.collected") > 0)
        #expect(number(doc, "counters.collected") == number(doc, "backlog.records"), "\(doc)")
        #expect(number(doc, "counters.dropped") == 0 && number(doc, "counters.written") == 0)
        // And the next start with Redis back delivers them.
        let server = try RedisServer(port: port)
        defer { server.stop(); server.removeFiles() }
        let kept = number(doc, "backlog.records")
        try agent.start()
        let after = try agent.waitFor(15) { number($0, "backlog.records") == 0 && number($0, "counters.replayed") >= kept }
        #expect(number(after, "counters.replayed") >= kept)
        #expect(agent.stop() == 0)
        _ = try assertExactlyOnceInOrder(server, "metrics:h:mem", gapFree: false)
    }

    /// Rows that cannot be decoded (here: the first two, in a format no version wrote) are set aside
    /// with their payload, and the rest of the backlog is replayed past them, in order, once.
    @Test func undecodableBatchesAreSetAsideAndReplayGoesOn() throws {
        let port = try RedisServer.freePort()
        let agent = try AgentProcess(redisPort: port)
        try agent.start()
        _ = try agent.waitFor(20) { number($0, "backlog.batches") >= 6 }
        #expect(agent.stop() == 0)
        let kept = try agent.status()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        p.arguments = ["-c", """
            import sqlite3, sys
            db = sqlite3.connect(sys.argv[1])
            ids = [r[0] for r in db.execute("SELECT id FROM batches ORDER BY id LIMIT 2")]
            for i in ids: db.execute("UPDATE batches SET payload = x'09000000' WHERE id = ?", (i,))
            db.commit()
            print(sum(r[0] for r in db.execute("SELECT records FROM batches WHERE id IN (%s)" % ",".join(map(str, ids)))))
            """, agent.dataDir.appendingPathComponent("buffer.sqlite").path]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        let damaged = Int64(String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        #expect(damaged > 0)
        let server = try RedisServer(port: port)
        defer { server.stop(); server.removeFiles() }
        try agent.start()
        let after = try agent.waitFor(15) { number($0, "backlog.records") == 0 && number($0, "counters.written") > 0 }
        #expect(number(after, "backlog.records") == 0, "\(after)")
        #expect(number(after, "unreadable.batches") == 2 && number(after, "unreadable.records") == damaged, "\(after)")
        #expect(number(after, "counters.replayed") >= number(kept, "backlog.records") - damaged, "\(after)")
        let (code, line) = try agent.check()
        #expect(code == 1 && line.hasPrefix("SPILLWAY WARNING - 2 unreadable batches (\(damaged) records) set aside"), "\(line)")
        #expect(agent.stop() == 0)
        let log = agent.logText
        #expect(log.components(separatedBy: "a spilled batch cannot be decoded; it was set aside").count == 3, "\(log)")
        #expect(log.contains("unknown batch format version 9"))
        let n = try assertExactlyOnceInOrder(server, "metrics:h:mem", gapFree: false)
        _ = try assertExactlyOnceInOrder(server, "metrics:h:system", gapFree: false)
        #expect(Int64(n) > 0)
        let text = try spillway(["status", "--config", agent.config.path])
        #expect(text.stdout.contains("unreadable 2 batches (\(damaged) records) could not be decoded"), "\(text.stdout)")
    }

    /// A stop does not wait for the inputs' next tick (here a minute away).
    @Test func sigtermStopsAtOnceBetweenTicks() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        let agent = try AgentProcess(redisPort: server.port, inputs: "[[inputs.mem]]\ninterval = \"1m\"\n[[inputs.system]]\ninterval = \"1m\"")
        try agent.start()
        // Running (its lock held) and started (its state saved by the writer, so its signal handling
        // is in place: the lock is taken before).
        let running = try agent.waitFor(20) { value($0, "agent.running") as? Bool == true && value($0, "agent.updated_at") is String }
        #expect(value(running, "agent.running") as? Bool == true && value(running, "agent.updated_at") is String, "\(running)")
        let start = Date()
        #expect(agent.stop() == 0)
        #expect(Date().timeIntervalSince(start) < 5, "the agent took \(Date().timeIntervalSince(start)) s to stop")
    }

    @Test func failingInputsAreCountedInStatus() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        // proc_root without a loadavg: system fails at every collection, mem goes on.
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-proc-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: root) }
        try String(contentsOfFile: "/proc/meminfo", encoding: .utf8).write(to: root.appendingPathComponent("meminfo"), atomically: true, encoding: .utf8)
        let agent = try AgentProcess(redisPort: server.port, inputs: "[[inputs.mem]]\n[[inputs.system]]\n", agentExtra: "proc_root = \"\(root.path)\"")
        try agent.start()
        let doc = try agent.waitFor(20) { number($0, "counters.input_errors") >= 3 && number($0, "counters.written") >= 3 }
        #expect(number(doc, "counters.input_errors") >= 3, "\(doc)")
        #expect(number(doc, "counters.written") >= 3)
        #expect(agent.stop() == 0)
        // Failing at every collection (100 ms), logged once.
        #expect(agent.logText.components(separatedBy: "input failed (logged once until it works again)").count == 2, "\(agent.logText)")
    }

    @Test func checkIsCriticalWhenTheBreakerStaysOpen() throws {
        let port = try RedisServer.freePort()
        let agent = try AgentProcess(redisPort: port, extra: "[status]\ncritical_open = \"1s\"\n")
        try agent.start()
        _ = try agent.waitFor(20) { (value($0, "breaker.state") as? String) == "open" && (value($0, "breaker.since_seconds") as? Double ?? 0) > 1.5 }
        let (code, line) = try agent.check()
        #expect(code == 2 && line.hasPrefix("SPILLWAY CRITICAL - breaker open for"), "\(line)")
        #expect(agent.stop() == 0)
    }

    @Test func replayRateLimitsTheDrain() throws {
        let port = try RedisServer.freePort()
        let agent = try AgentProcess(redisPort: port, extra: "[buffer]\nreplay_rate = 20\nreplay_batch_size = 5\n", inputs: "[[inputs.mem]]")
        try agent.start()
        let outage = try agent.waitFor(15) { number($0, "backlog.records") >= 40 }
        let backlog = number(outage, "backlog.records")
        let server = try RedisServer(port: port)
        defer { server.stop(); server.removeFiles() }
        let start = Date()
        var sawRate = false
        let deadline = Date().addingTimeInterval(30)
        var doc: [String: Any] = [:]
        while Date() < deadline {
            doc = try agent.status()
            if (value(doc, "backlog.replay_rate") as? Double ?? 0) > 0 { sawRate = true }
            if number(doc, "backlog.records") == 0 { break }
            usleep(100_000)
        }
        let took = Date().timeIntervalSince(start)
        #expect(number(doc, "backlog.records") == 0, "\(doc)")
        // 20 records/s against 10 new ones a second: about backlog / 10 seconds, never all at once.
        #expect(took >= Double(backlog) / 20, "drained \(backlog) records in \(took) s")
        #expect(sawRate, "status never showed a replay rate")
        #expect(agent.stop() == 0)
        _ = try assertExactlyOnceInOrder(server, "metrics:h:mem", gapFree: true)
    }

    @Test func smallMaxBytesDropsOldestExactlyAsCounted() throws {
        let port = try RedisServer.freePort()
        let agent = try AgentProcess(redisPort: port, extra: "[buffer]\nmax_bytes = \"64KiB\"\n")
        try agent.start()
        let full = try agent.waitFor(30) { number($0, "counters.dropped") > 20 }
        #expect(agent.stop() == 0)
        let doc = try agent.status()
        let dropped = number(doc, "counters.dropped")
        #expect(dropped > 20, "\(full)")
        #expect(number(doc, "backlog.bytes") <= 64 << 10)
        let perKey = (value(doc, "dropped.keys") as? [[String: Any]] ?? []).reduce(Int64(0)) { $0 + (($1["records"] as? NSNumber)?.int64Value ?? 0) }
        #expect(perKey == dropped, "\(doc)")
        #expect(number(doc, "counters.collected") == number(doc, "counters.written") + number(doc, "counters.replayed")
            + dropped + number(doc, "counters.rejected") + number(doc, "counters.duplicates") + number(doc, "backlog.records"), "\(doc)")
        let (code, line) = try agent.check()
        // Stopped: critical for that first, and for the drops.
        #expect(code == 2 && line.hasPrefix("SPILLWAY CRITICAL - agent not running") && line.contains("; \(dropped) records dropped in this run"), "\(line)")
        #expect(agent.logText.contains("the spill buffer is full"))
    }
}

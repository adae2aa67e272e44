import Foundation
import SpillwayTestSupport
import Testing

/// A tmpfs of `size` mounted at `dir` (root only). Nil when it cannot be mounted.
func mountTmpfs(_ dir: URL, size: String) -> Bool {
    try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/mount")
    p.arguments = ["-t", "tmpfs", "-o", "size=\(size)", "tmpfs", dir.path]
    p.standardError = FileHandle.nullDevice
    guard (try? p.run()) != nil else { return false }
    p.waitUntilExit()
    return p.terminationStatus == 0
}

func unmount(_ dir: URL) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/umount")
    p.arguments = [dir.path]
    try? p.run()
    p.waitUntilExit()
}

/// Whether this process may mount a tmpfs (root with the right to mount: CI runs as root), found
/// by mounting a small one and unmounting it. Where it cannot, the full-disk test is skipped and
/// says why (never passed silently).
let canMount: Bool = {
    guard getuid() == 0, FileManager.default.fileExists(atPath: "/bin/mount") else { return false }
    let probe = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-mount-probe-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: probe) }
    guard mountTmpfs(probe, size: "64k") else { return false }
    unmount(probe)
    return true
}()

/// Appends `count` numbered lines of about 110 bytes to `path`.
func appendLines(_ path: String, from first: Int, count: Int, prefix: String = "line") {
    var text = ""
    for i in first..<(first + count) { text += "\(prefix)-\(String(format: "%08d", i)) " + String(repeating: "x", count: 96) + "\n" }
    let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
    _ = Array(text.utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    close(fd)
}

/// An agent (`AgentProcess`) following `app` from its beginning, plus `inputs`; every stream entry
/// kept (`maxlen = 0`), so lines can be counted.
func tailingAgent(redisPort: Int, app: String, inputs: String = "") throws -> AgentProcess {
    let agent = try AgentProcess(redisPort: redisPort, inputs: """
        \(inputs)
        [[inputs.tail]]
        files = ["\(app)"]
        from_beginning = true
        watch_interval = "100ms"
        """)
    let config = try String(contentsOf: agent.config, encoding: .utf8)
        .replacingOccurrences(of: "[outputs.redis]", with: "[outputs.redis]\nmaxlen = 0")
    try config.write(to: agent.config, atomically: true, encoding: .utf8)
    return agent
}

/// The promise where real hosts break it: a really full disk, a second agent on one data_dir, …
@Suite(.serialized) struct Harden {
    /// A second `run` on the same data_dir exits 1 at once, naming the data_dir and the pid holding
    /// it; the first agent goes on, and `status` and `once` still work beside it. Once the first is
    /// killed with -9, the kernel releases the lock and a new `run` starts.
    @Test func secondAgentOnOneDataDirExitsNamingTheFirst() throws {
        let port = try RedisServer.freePort()
        let server = try RedisServer(port: port)
        defer { server.stop(); server.removeFiles() }
        let first = try AgentProcess(redisPort: port)
        try first.start()
        let pid = first.process!.processIdentifier
        _ = try first.waitFor(20) { ($0["agent"] as? [String: Any])?["running"] as? Bool == true }

        let started = Date()
        let second = try spillway(["run", "--config", first.config.path])
        #expect(second.status == 1, "\(second.stderr)")
        #expect(Date().timeIntervalSince(started) < 5)
        #expect(second.stderr.contains("data_dir \(first.dataDir.path) is in use by another spillway run (pid \(pid))"), "\(second.stderr)")
        #expect(second.stderr.split(separator: "\n").count == 1, "\(second.stderr)")
        #expect(first.process?.isRunning == true)

        // status and once beside the running agent.
        let doc = try first.status()
        #expect((doc["agent"] as? [String: Any])?["running"] as? Bool == true, "\(doc)")
        let once = try spillway(["once", "--config", first.config.path])
        #expect(once.status == 0 && once.stdout.contains("mem,host=h "), "\(once.stderr)")

        // kill -9 frees the lock: a new agent on the same data_dir starts and writes.
        first.sigkill()
        try first.start()
        let before = Int((try? server.cli(["XLEN", "metrics:h:mem"])) ?? "") ?? 0
        let deadline = Date().addingTimeInterval(10)
        var after = before
        while after <= before + 2, Date() < deadline {
            usleep(100_000)
            after = Int((try? server.cli(["XLEN", "metrics:h:mem"])) ?? "") ?? 0
        }
        #expect(after > before + 2, "the agent started after a kill -9 did not write (\(before) -> \(after)): \(first.logText)")
        #expect(first.stop() == 0)
    }

    /// data_dir on a 4 MiB tmpfs, a tail input at 10,000 lines/s and mem every 20 ms, Redis down
    /// for 8 s: the buffer fills the file system; then another program takes its last bytes for
    /// 3.5 s, while Redis comes back and the backlog is replayed. Nothing wedges: every line arrives once, in order; the
    /// mem records Redis lacks are exactly those the `dropped` counter counts; each condition is
    /// logged once per episode.
    @Test(.enabled(if: canMount, "skipped: this process cannot mount a tmpfs (needs root and the right to mount; CI runs as root)"))
    func reallyFullDiskNeverWedges() throws {
        let port = try RedisServer.freePort()
        let redisDir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-fullredis-\(UUID().uuidString)")
        // Redis keeps what it acknowledged across its restart (AOF, fsync always).
        let aof = ["--appendonly", "yes", "--appendfsync", "always"]
        var server = try RedisServer(port: port, dir: redisDir, args: aof)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-fulldisk-\(UUID().uuidString)")
        let mnt = dir.appendingPathComponent("mnt")
        // (Never write the filler below on the real disk.)
        try #require(mountTmpfs(mnt, size: "4m"), "cannot mount a tmpfs at \(mnt.path)")
        defer {
            unmount(mnt)
            try? FileManager.default.removeItem(at: dir)
            server.stop()
            server.removeFiles()
        }
        let app = dir.appendingPathComponent("app.log").path
        _ = FileManager.default.createFile(atPath: app, contents: nil)
        let agent = try tailingAgent(redisPort: port, app: app, inputs: "[[inputs.mem]]\ninterval = \"20ms\"")
        // The buffer on the small file system.
        let config = try String(contentsOf: agent.config, encoding: .utf8)
            .replacingOccurrences(of: "data_dir = \"\(agent.dataDir.path)\"", with: "data_dir = \"\(mnt.path)/data\"")
        try config.write(to: agent.config, atomically: true, encoding: .utf8)
        try agent.start()
        defer { if agent.process != nil { agent.sigkill() } }

        // 10,000 lines/s: 1,000 every 100 ms, for 14 s. Redis is down from 2 s to 10 s; from 9 s
        // to 12.5 s another file takes every free byte of the file system (the backlog is then
        // replayed on a file system with no byte free).
        var written = 0
        let filler = mnt.appendingPathComponent("filler").path
        let start = Date()
        for tick in 0..<140 {
            appendLines(app, from: written, count: 1000)
            written += 1000
            if tick == 20 { server.stop() }
            if tick == 100 { server = try RedisServer(port: port, dir: redisDir, args: aof) }
            if tick == 90 {
                // Fill the file system to its last byte.
                let fd = open(filler, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
                let chunk = [UInt8](repeating: 0, count: 65536)
                var n = 0
                // Bounded: 4 MiB hold 64 chunks at most, and less than one chunk is left after.
                while n < 128, chunk.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) > 0 { n += 1 }
                var one: UInt8 = 0
                var bytes = 0
                while bytes < 65536, write(fd, &one, 1) == 1 { bytes += 1 }
                close(fd)
            }
            if tick == 125 { unlink(filler) }
            let due = start.addingTimeInterval(Double(tick + 1) / 10)
            if due > Date() { usleep(useconds_t(due.timeIntervalSinceNow * 1e6)) }
        }
        unlink(filler)
        let expected = (0..<written).map { "line-\(String(format: "%08d", $0)) " + String(repeating: "x", count: 96) }
        expectSameLines(try waitForMessages(server, "metrics:h:log", prefix: "line-", count: written, seconds: 90), expected)
        #expect(agent.stop() == 0)
        let doc = try agent.status()
        let log = agent.logText
        // Metrics: what Redis lacks is exactly what was counted as dropped.
        let memInRedis = (Int64(try server.cli(["XLEN", "metrics:h:mem"]).trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1)
            + Int64(internalInRedis(server))
        let collected = number(doc, "counters.collected")
        #expect(collected - Int64(written) == memInRedis + number(doc, "counters.dropped"),
                "collected \(collected), lines \(written), mem in Redis \(memInRedis), dropped \(number(doc, "counters.dropped"))")
        #expect(number(doc, "backlog.records") == 0)
        #expect(number(doc, "counters.rejected") == 0 && number(doc, "counters.duplicates") == 0, "\(doc)")
        // Each spilled record ended once (a replay that failed does not count it again).
        let ended = ["replayed", "duplicates", "rejected", "dropped"].map { number(doc, "counters.\($0)") }.reduce(0, +)
        #expect(number(doc, "counters.spilled") <= ended, "\(doc)")
        // The file system did fill: the tail waited, and the reserve was released and allocated again.
        #expect(log.contains("tailed lines wait for room in the spill buffer"), "\(log)")
        #expect(log.contains("its reserve was released"), "\(log)")
        #expect(log.contains("its reserve is allocated again"), "\(log)")
        // Once per episode, not once per attempt.
        let lines = log.split(separator: "\n")
        #expect(lines.count < 60, "\(lines.count) log lines:\n\(log)")
        for phrase in ["tailed lines wait for room", "its reserve was released", "cannot delete delivered batches", "cannot read the spill buffer",
                       "cannot save the agent state", "the spill buffer is full"] {
            #expect(lines.filter { $0.contains(phrase) }.count <= 3, "\(phrase):\n\(log)")
        }
        #expect(DiskRoomProbe.size(mnt.path + "/data/reserve") == 512 * 1024)
    }

    /// A Redis that wants a password the config lacks, then an ACL that forbids XADD: nothing is
    /// rejected for good. The breaker opens at once, one line names the fix, `status --check` is
    /// CRITICAL at once, the lines wait in the buffer, and every one arrives once the password (and
    /// then the ACL) is fixed, with the agent running all along.
    @Test func aRedisThatWantsAPasswordLosesNothing() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        let admin = ["--user", "default", "--pass", "s3cret"]
        #expect(try server.cli(["CONFIG", "SET", "requirepass", "s3cret"]) == "OK")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-auth-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let app = dir.appendingPathComponent("app.log").path
        appendLines(app, from: 0, count: 20)
        let agent = try tailingAgent(redisPort: server.port, app: app)
        try agent.start()
        defer { if agent.process != nil { agent.sigkill() } }
        let waiting = try agent.waitFor(20) { number($0, "backlog.records") == 20 && (value($0, "breaker.state") as? String) == "open" }
        #expect(number(waiting, "backlog.records") == 20, "\(waiting)")
        #expect(number(waiting, "counters.rejected") == 0, "\(waiting)")
        #expect(value(waiting, "last_error.kind") as? String == "auth", "\(waiting)")
        let (code, line) = try agent.check()
        #expect(code == 2 && line.contains("authentication"), "\(line)")
        let refused = agent.logText.split(separator: "\n").filter { $0.contains("Redis refused this agent's credentials or ACL") }
        #expect(refused.count == 1, "\(agent.logText)")
        #expect(refused.first?.contains("requires a password and none is configured") == true, "\(refused)")
        #expect(!agent.logText.contains("rejected"), "\(agent.logText)")

        // The password is dropped from Redis: everything arrives, nothing rejected.
        #expect(try server.cli(["CONFIG", "SET", "requirepass", ""], auth: admin) == "OK")
        let expected = (0..<20).map { "line-\(String(format: "%08d", $0)) " + String(repeating: "x", count: 96) }
        expectSameLines(try waitForMessages(server, "metrics:h:log", prefix: "line-", count: 20, seconds: 20), expected)

        // Now an ACL that forbids XADD (NOPERM): the new lines wait; granted again, they arrive.
        #expect(try server.cli(["ACL", "SETUSER", "default", "-xadd"]) == "OK")
        appendLines(app, from: 20, count: 10)
        let denied = try agent.waitFor(20) { number($0, "backlog.records") == 10 }
        #expect(number(denied, "backlog.records") == 10 && number(denied, "counters.rejected") == 0, "\(denied)")
        #expect(try agent.check().0 == 2)
        #expect(try server.cli(["ACL", "SETUSER", "default", "+xadd"]) == "OK")
        let all = (0..<30).map { "line-\(String(format: "%08d", $0)) " + String(repeating: "x", count: 96) }
        expectSameLines(try waitForMessages(server, "metrics:h:log", prefix: "line-", count: 30, seconds: 20), all)
        let done = try agent.waitFor(20) { (value($0, "breaker.state") as? String) == "closed" && number($0, "backlog.records") == 0 }
        #expect(number(done, "counters.rejected") == 0 && number(done, "counters.dropped") == 0, "\(done)")
        #expect(agent.logText.split(separator: "\n").filter { $0.contains("Redis refused this agent's credentials or ACL") && $0.contains(": works again") }.count == 2,
                "\(agent.logText)")
        #expect(agent.stop() == 0)
    }

    /// Redis flapping near maxmemory (noeviction) while a tail writes 10,000 lines/s: maxmemory is
    /// set just above use, then lifted, six times. Redis half-refuses pipelines (OOM for some XADDs,
    /// later ones of the same key accepted as its memory dips); the refused lines get new IDs and
    /// every line arrives: lost 0, doubled 0.
    @Test func redisHalfRefusingPipelinesNearMaxmemoryLosesNothing() throws {
        let server = try RedisServer(args: ["--maxmemory-policy", "noeviction"])
        defer { server.stop(); server.removeFiles() }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-oom-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let app = dir.appendingPathComponent("app.log").path
        _ = FileManager.default.createFile(atPath: app, contents: nil)
        let agent = try tailingAgent(redisPort: server.port, app: app)
        try agent.start()
        defer { if agent.process != nil { agent.sigkill() } }
        func usedMemory() -> Int {
            let info = (try? server.cli(["INFO", "memory"])) ?? ""
            let line = info.split(whereSeparator: \.isNewline).first { $0.hasPrefix("used_memory:") } ?? ""
            return Int(line.dropFirst("used_memory:".count)) ?? 0
        }
        var written = 0
        var refusals = 0
        let start = Date()
        for tick in 0..<130 {
            appendLines(app, from: written, count: 1000)
            written += 1000
            if tick >= 10, tick % 20 == 10 {
                // Just above what Redis uses now: the next pipelines cross it part way.
                _ = try server.cli(["CONFIG", "SET", "maxmemory", "\(usedMemory() + 150_000)"])
                refusals += 1
            } else if tick >= 10, tick % 20 == 0 {
                _ = try server.cli(["CONFIG", "SET", "maxmemory", "0"])
            }
            let due = start.addingTimeInterval(Double(tick + 1) / 10)
            if due > Date() { usleep(useconds_t(due.timeIntervalSinceNow * 1e6)) }
        }
        _ = try server.cli(["CONFIG", "SET", "maxmemory", "0"])
        #expect(refusals == 6)
        let got = try waitForMessages(server, "metrics:h:log", prefix: "line-", count: written, seconds: 60)
        let expected = (0..<written).map { "line-\(String(format: "%08d", $0)) " + String(repeating: "x", count: 96) }
        // Lines refused by Redis land after those it took meanwhile: compared as sets, and counted.
        #expect(got.count == written, "\(got.count) lines in Redis for \(written) written")
        #expect(Set(got).count == got.count, "duplicates in Redis")
        #expect(Set(got) == Set(expected), "missing: \(Set(expected).subtracting(got).sorted().prefix(5))")
        #expect(agent.stop() == 0)
        let c = writerCounters(agent.logText)
        #expect(c["rejected"] == 0 && c["dropped"] == 0 && c["duplicates"] == 0, "\(c)")
        // Redis did refuse lines (OOM) that were then sent again.
        #expect(agent.logText.contains("OOM"), "\(agent.logText)")
        #expect((c["new_ids"] ?? 0) > 0, "\(c)")
    }
}

enum DiskRoomProbe {
    static func size(_ path: String) -> Int64 {
        var st = stat()
        return stat(path, &st) == 0 ? Int64(st.st_size) : -1
    }
}

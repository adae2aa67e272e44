import Foundation
import SpillwayTestSupport
import Testing

/// Appends numbered lines to a log file at a steady rate on a thread of its own, and performs
/// rotations between two lines, as an application and logrotate would. Remembers every line written.
final class LogWriter: @unchecked Sendable {
    let prefix: String
    private(set) var path: String
    private let lock = NSLock()
    private var fd: Int32 = -1
    private var actions: [(LogWriter) -> Void] = []
    private var stopped = false
    private var thread: Thread?
    private(set) var written: [String] = []
    let interval: useconds_t

    init(path: String, prefix: String, perSecond: Int = 200) {
        self.path = path
        self.prefix = prefix
        interval = useconds_t(1_000_000 / perSecond)
        reopen()
    }

    func reopen(_ newPath: String? = nil) {
        if fd >= 0 { close(fd) }
        if let newPath { path = newPath }
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
    }

    func writeLine() {
        let line = "\(prefix)-\(String(format: "%06d", written.count)) " + String(repeating: "x", count: 40)
        let bytes = Array((line + "\n").utf8)
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        written.append(line)
    }

    /// Runs `action` on the writer's thread between two lines, and waits for it.
    func between(_ action: @escaping (LogWriter) -> Void) {
        let done = DispatchSemaphore(value: 0)
        lock.withLock { actions.append { w in action(w); done.signal() } }
        _ = done.wait(timeout: .now() + 10)
    }

    func start() {
        let t = Thread { [self] in
            while true {
                let (todo, stop) = lock.withLock { () -> ([(LogWriter) -> Void], Bool) in
                    defer { actions.removeAll() }
                    return (actions, stopped)
                }
                for a in todo { a(self) }
                if stop { break }
                writeLine()
                usleep(interval)
            }
        }
        thread = t
        t.start()
    }

    /// Stops writing; returns every line written.
    func stop() -> [String] {
        if thread != nil {
            between { w in w.lock.withLock { w.stopped = true } }
            usleep(50_000)
        }
        close(fd)
        return lock.withLock { written }
    }
}

/// `message` of every entry of a stream, in stream order (optionally only those starting with `prefix`).
func streamMessages(_ server: RedisServer, _ key: String, prefix: String = "") throws -> [String] {
    let lines = try server.cli(["--raw", "XRANGE", key, "-", "+"]).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    var out: [String] = []
    for (i, l) in lines.enumerated() where l == "message" && i + 1 < lines.count && lines[i + 1].hasPrefix(prefix) {
        out.append(lines[i + 1])
    }
    return out
}

/// Waits until the stream holds `count` entries with `prefix` (at most `seconds`); returns them.
func waitForMessages(_ server: RedisServer, _ key: String, prefix: String = "", count: Int, seconds: Double = 30) throws -> [String] {
    let deadline = Date().addingTimeInterval(seconds)
    var got: [String] = []
    while Date() < deadline {
        got = try streamMessages(server, key, prefix: prefix)
        if got.count >= count { break }
        usleep(100_000)
    }
    // A little longer: anything beyond `count` would be a duplicate.
    usleep(300_000)
    return try streamMessages(server, key, prefix: prefix)
}

/// Asserts the lines in Redis are exactly the lines written: same count, same order, no duplicate.
func expectSameLines(_ got: [String], _ written: [String], sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(got.count == written.count, "\(got.count) entries in Redis for \(written.count) lines written", sourceLocation: sourceLocation)
    #expect(Set(got).count == got.count, "duplicates in Redis", sourceLocation: sourceLocation)
    if got != written {
        let firstDiff = zip(got, written).enumerated().first { $0.element.0 != $0.element.1 }
        let missing = Set(written).subtracting(got).sorted().prefix(10)
        Issue.record("lines differ at \(firstDiff?.offset ?? min(got.count, written.count)); missing \(Array(missing))", sourceLocation: sourceLocation)
    }
}

func tailInput(_ files: [String], _ extra: String = "") -> String {
    """
    [[inputs.tail]]
    files = [\(files.map { "\"\($0)\"" }.joined(separator: ", "))]
    watch_interval = "100ms"
    rotate_wait = "1s"
    partial_timeout = "1s"
    \(extra)
    """
}

@Suite(.serialized) struct Tail {
    /// Rename-and-create, copytruncate, delete-and-recreate and a symlink retargeted, while writers
    /// append 200 lines/s: every line arrives once, in order.
    @Test func everyRotationStyleWhileAWriterAppends() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        let logs = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-logs-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: logs, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: logs) }
        let app = logs.appendingPathComponent("app.log").path
        let current = logs.appendingPathComponent("current.log").path
        let a = logs.appendingPathComponent("a.txt").path, b = logs.appendingPathComponent("b.txt").path
        _ = FileManager.default.createFile(atPath: a, contents: nil)
        symlink(a, current)
        let agent = try AgentProcess(redisPort: server.port, inputs: tailInput([app, current]))
        try agent.start()
        _ = try agent.waitFor(20) { ($0["files"] as? [Any])?.count ?? 0 >= 1 }
        let w1 = LogWriter(path: app, prefix: "app")
        let w2 = LogWriter(path: a, prefix: "cur")
        w1.start()
        w2.start()
        usleep(1_000_000)
        // logrotate's create: rename, then the application reopens its log.
        w1.between { w in
            try? FileManager.default.moveItem(atPath: app, toPath: app + ".1")
            w.reopen()
        }
        w2.between { w in
            // The symlink is pointed at a new file; the application follows it.
            unlink(current)
            symlink(b, current)
            w.reopen(b)
        }
        usleep(1_000_000)
        // copytruncate: copy, then truncate in place (the application keeps its descriptor).
        w1.between { _ in
            try? FileManager.default.removeItem(atPath: app + ".1")
            try? FileManager.default.copyItem(atPath: app, toPath: app + ".1")
            _ = truncate(app, 0)
        }
        usleep(1_000_000)
        // Deleted and created again.
        w1.between { w in
            unlink(app)
            w.reopen()
        }
        usleep(1_000_000)
        let written1 = w1.stop(), written2 = w2.stop()
        let got1 = try waitForMessages(server, "metrics:h:log", prefix: "app-", count: written1.count)
        let got2 = try streamMessages(server, "metrics:h:log", prefix: "cur-")
        expectSameLines(got1, written1)
        expectSameLines(got2, written2)
        #expect(written1.count > 500 && written2.count > 500)
        #expect(agent.stop() == 0)
        #expect(agent.logText.contains("was truncated; reading the rest of its old content from"))
    }

    /// The agent is stopped (SIGTERM) and later killed (SIGKILL) while a writer appends, and started
    /// again each time: no line lost, none doubled.
    @Test func restartAndKillOfTheAgentMidFile() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        let agent = try AgentProcess(redisPort: server.port, inputs: "")
        let app = agent.dir.appendingPathComponent("app.log").path
        try (String(contentsOf: agent.config, encoding: .utf8) + "\n" + tailInput([app])).write(to: agent.config, atomically: true, encoding: .utf8)
        _ = FileManager.default.createFile(atPath: app, contents: nil)
        try agent.start()
        _ = try agent.waitFor(20) { ($0["files"] as? [Any])?.count ?? 0 >= 1 }
        let w = LogWriter(path: app, prefix: "k", perSecond: 500)
        w.start()
        usleep(1_000_000)
        #expect(agent.stop() == 0)
        usleep(500_000)
        try agent.start()
        usleep(1_500_000)
        agent.sigkill()
        usleep(500_000)
        try agent.start()
        usleep(1_000_000)
        agent.sigkill()
        try agent.start()
        usleep(1_000_000)
        let written = w.stop()
        let got = try waitForMessages(server, "metrics:h:log", prefix: "k-", count: written.count)
        expectSameLines(got, written)
        let doc = try agent.waitFor(5) { number($0, "backlog.records") == 0 }
        // The window after a kill -9: batches Redis had acknowledged whose rows were not deleted yet
        // are sent again and refused as already there (explicit IDs), never written twice.
        print("tail kill -9: \(written.count) lines, \(got.count) entries, \(number(doc, "counters.duplicates")) resent lines refused as duplicates after the last restart")
        let files = doc["files"] as? [[String: Any]] ?? []
        #expect(files.count == 1 && (files.first?["lag_bytes"] as? NSNumber)?.int64Value == 0, "\(files)")
        #expect(agent.stop() == 0)
    }

    /// Redis is killed and restarted on the same port while a writer appends: every line once.
    @Test func redisKilledAndRestartedMidFile() throws {
        let port = try RedisServer.freePort()
        let redisDir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-tail-redis-\(UUID().uuidString)")
        let aof = ["--appendonly", "yes", "--appendfsync", "always"]
        var server = try RedisServer(port: port, dir: redisDir, args: aof)
        defer { server.stop(); server.removeFiles() }
        let agent = try AgentProcess(redisPort: port, inputs: "")
        let app = agent.dir.appendingPathComponent("app.log").path
        _ = FileManager.default.createFile(atPath: app, contents: nil)
        try (String(contentsOf: agent.config, encoding: .utf8) + "\n" + tailInput([app])).write(to: agent.config, atomically: true, encoding: .utf8)
        try agent.start()
        _ = try agent.waitFor(20) { ($0["files"] as? [Any])?.count ?? 0 >= 1 }
        let w = LogWriter(path: app, prefix: "r", perSecond: 300)
        w.start()
        usleep(1_000_000)
        server.crash()
        let during = try agent.waitFor(20) { (value($0, "breaker.state") as? String) == "open" && number($0, "backlog_lines") > 0 }
        #expect(number(during, "backlog_lines") > 0, "\(during)")
        usleep(1_000_000)
        server = try RedisServer(port: port, dir: redisDir, args: aof)
        usleep(1_000_000)
        let written = w.stop()
        let got = try waitForMessages(server, "metrics:h:log", prefix: "r-", count: written.count)
        expectSameLines(got, written)
        #expect(agent.stop() == 0)
    }

    /// Truncated in place once read, then written again; and 100 files at once.
    @Test func truncatedFileAndManyFiles() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        let agent = try AgentProcess(redisPort: server.port, inputs: "")
        let logs = agent.dir.appendingPathComponent("logs")
        try FileManager.default.createDirectory(at: logs, withIntermediateDirectories: true)
        // from_beginning: t.log is read from its start whether the input's first look comes before
        // it is written or after (a loaded CI's agent may start late).
        try (String(contentsOf: agent.config, encoding: .utf8) + "\n" + tailInput([logs.path + "/**/*.log"], "max_open_files = 16\nfrom_beginning = true"))
            .write(to: agent.config, atomically: true, encoding: .utf8)
        try agent.start()
        _ = try agent.waitFor(20) { number($0, "counters.collected") >= 0 && (value($0, "agent.running") as? Bool) == true }
        let t = logs.appendingPathComponent("t.log").path
        let w = LogWriter(path: t, prefix: "t")
        for _ in 0..<50 { w.writeLine() }
        #expect(try waitForMessages(server, "metrics:h:log", prefix: "t-", count: 50).count == 50, "\(agent.logText)")
        _ = truncate(t, 0)
        for _ in 0..<50 { w.writeLine() }
        let written = w.stop()
        expectSameLines(try waitForMessages(server, "metrics:h:log", prefix: "t-", count: 100), written)

        var all: [String: [String]] = [:]
        for d in 0..<10 {
            try FileManager.default.createDirectory(at: logs.appendingPathComponent("d\(d)"), withIntermediateDirectories: true)
            for f in 0..<10 {
                let name = "m\(d)x\(f)"
                let lw = LogWriter(path: logs.appendingPathComponent("d\(d)/\(name).log").path, prefix: name)
                for _ in 0..<50 { lw.writeLine() }
                all[name] = lw.stop()
            }
        }
        _ = try waitForMessages(server, "metrics:h:log", prefix: "m", count: 5000)
        for (name, lines) in all {
            expectSameLines(try streamMessages(server, "metrics:h:log", prefix: name + "-"), lines)
        }
        #expect(agent.stop() == 0)
    }

    /// Redis down and a tiny buffer: the tailer stops reading instead of dropping, status shows the
    /// lag, and everything arrives once Redis is back.
    @Test func backpressureInsteadOfDrops() throws {
        let port = try RedisServer.freePort()
        let agent = try AgentProcess(redisPort: port, extra: "[buffer]\nmax_bytes = \"64KiB\"\n", inputs: "", agentExtra: "buffer_limit = 200\nbatch_size = 100")
        let app = agent.dir.appendingPathComponent("app.log").path
        _ = FileManager.default.createFile(atPath: app, contents: nil)
        try (String(contentsOf: agent.config, encoding: .utf8) + "\n" + tailInput([app])).write(to: agent.config, atomically: true, encoding: .utf8)
        try agent.start()
        _ = try agent.waitFor(20) { ($0["files"] as? [Any])?.count ?? 0 >= 1 }
        let w = LogWriter(path: app, prefix: "p")
        for _ in 0..<20_000 { w.writeLine() }
        let waiting = try agent.waitFor(20) { doc in
            ((doc["files"] as? [[String: Any]])?.first?["lag_bytes"] as? NSNumber)?.int64Value ?? 0 > 100_000
        }
        let lag = ((waiting["files"] as? [[String: Any]])?.first?["lag_bytes"] as? NSNumber)?.int64Value ?? 0
        #expect(lag > 100_000, "\(waiting)")
        #expect(number(waiting, "counters.dropped") == 0)
        // (The lag can show before the encode stage meets the full buffer and says so.)
        let deadline = Date().addingTimeInterval(10)
        while !agent.logText.contains("tailed lines wait for room in the spill buffer"), Date() < deadline { usleep(50_000) }
        #expect(agent.logText.contains("tailed lines wait for room in the spill buffer"))
        let server = try RedisServer(port: port)
        defer { server.stop(); server.removeFiles() }
        let written = w.stop()
        expectSameLines(try waitForMessages(server, "metrics:h:log", prefix: "p-", count: written.count, seconds: 60), written)
        let done = try agent.status()
        #expect(number(done, "counters.dropped") == 0)
        #expect(agent.stop() == 0)
    }

    /// The seed article's drift reports: one JSON report per line, per-tenant bounded streams.
    @Test func driftReportsRecipe() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        let agent = try AgentProcess(redisPort: server.port, inputs: "")
        let log = agent.dir.appendingPathComponent("drift.jsonl").path
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        try (String(contentsOf: agent.config, encoding: .utf8) + """

            [[inputs.tail]]
            files = ["\(log)"]
            watch_interval = "100ms"
            format = "json"
            tag_keys = ["tenant"]
            key = "prod:rag:drift:{tag.tenant}"
            maxlen = 20000
            name = "drift"
            timestamp_key = "ts"
            timestamp_format = "unix_ms"
            """).write(to: agent.config, atomically: true, encoding: .utf8)
        try agent.start()
        _ = try agent.waitFor(20) { ($0["files"] as? [Any])?.count ?? 0 >= 1 }
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        let base: Int64 = 1_700_000_000_000
        for i in 0..<30 {
            let tenant = i % 3 == 0 ? "acme" : "globex"
            h.write(Data(#"{"tenant":"\#(tenant)","ts":\#(base + Int64(i) * 1000),"embedding_drift":\#(Double(i) / 100),"queries":\#(i),"alerts":{"drift":\#(i > 20)}}"#.utf8 + [10]))
        }
        try h.close()
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline, (try? server.cli(["XLEN", "prod:rag:drift:globex"])) != "20" { usleep(100_000) }
        #expect(try server.cli(["XLEN", "prod:rag:drift:acme"]) == "10")
        #expect(try server.cli(["XLEN", "prod:rag:drift:globex"]) == "20")
        let latest = try server.cli(["--raw", "XREVRANGE", "prod:rag:drift:acme", "+", "-", "COUNT", "1"]).split(separator: "\n").map(String.init)
        #expect(latest.first == "\(base + 27_000)-0", "\(latest)")
        #expect(latest.contains("embedding_drift") && latest.contains("0.27") && latest.contains("alerts.drift") && latest.contains("true"))
        #expect(latest.contains("tag_path") && latest.contains("tag_host"))
        let since = try server.cli(["--raw", "XRANGE", "prod:rag:drift:globex", "\(base + 25_000)", "+"]).split(separator: "\n")
        // globex's reports 25, 26, 28 and 29 (27 is acme's).
        let ids = since.filter { $0.allSatisfy { $0.isNumber || $0 == "-" } && $0.contains("-") }
        #expect(ids == ["\(base + 25_000)-0", "\(base + 26_000)-0", "\(base + 28_000)-0", "\(base + 29_000)-0"], "\(since)")
        #expect(agent.stop() == 0)
    }
}

import Foundation
import SpillwayTestSupport
import Testing

/// Starts `agent` with extra `run` arguments (e.g. `--log-level trace`), its stderr appended to its log.
func startAgent(_ agent: AgentProcess, _ extra: [String]) throws {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: spillwayBin)
    p.arguments = ["run", "--config", agent.config.path] + extra
    let handle = try FileHandle(forWritingTo: agent.log)
    handle.seekToEndOfFile()
    p.standardError = handle
    p.standardOutput = FileHandle.nullDevice
    try p.run()
    agent.process = p
}

/// Runs a short Python program with sqlite3 on the agent's buffer (the agent may be running: WAL,
/// with a busy timeout); returns its stdout.
func sqlite(_ buffer: URL, _ program: String) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["python3", "-c", "import sqlite3, sys\ndb = sqlite3.connect(sys.argv[1], timeout=10)\n" + program, buffer.path]
    let out = Pipe()
    p.standardOutput = out
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    #expect(p.terminationStatus == 0, "python3 sqlite3 failed")
    return String(decoding: data, as: UTF8.self)
}

/// Every byte of every file under `dir`, as text (lossy), to look for a secret in.
func allBytes(under dir: URL) -> String {
    var out = ""
    let e = FileManager.default.enumerator(atPath: dir.path)
    while let name = e?.nextObject() as? String {
        if let d = FileManager.default.contents(atPath: dir.appendingPathComponent(name).path) {
            out += String(decoding: d, as: UTF8.self)
        }
    }
    return out
}

/// Issue 15, items 6 to 9: secrets never printed, `status --check` states, `check` on configs that
/// cannot run, and status telling the current truth.
@Suite(.serialized) struct StatusAndCheck {
    // MARK: 6. secrets

    /// The agent at trace level, with the password in the url and then in password_file, plus
    /// `check` and `status` (text and JSON): the password appears in none of their output, nor
    /// anywhere in the data_dir (the buffer's agent_state table included). The agent writes, so it
    /// did authenticate with it.
    @Test func thePasswordIsNeverPrinted() throws {
        let password = "Pw-\(UUID().uuidString.prefix(8))-s3cret"
        let server = try RedisServer(args: ["--requirepass", password])
        defer { server.stop(); server.removeFiles() }
        for variant in ["url", "password_file"] {
            let agent = try AgentProcess(redisPort: server.port)
            let url = variant == "url" ? "redis://:\(password)@127.0.0.1:\(server.port)/0" : "redis://127.0.0.1:\(server.port)/0"
            var toml = try String(contentsOf: agent.config, encoding: .utf8)
            toml = toml.replacingOccurrences(of: "url = \"redis://127.0.0.1:\(server.port)/0\"", with: "url = \"\(url)\"")
            if variant == "password_file" {
                try "\(password)\n".write(to: agent.dir.appendingPathComponent("redis.pass"), atomically: true, encoding: .utf8)
                toml = toml.replacingOccurrences(of: "[outputs.redis]\n", with: "[outputs.redis]\npassword_file = \"redis.pass\"\n")
            }
            try toml.write(to: agent.config, atomically: true, encoding: .utf8)
            try startAgent(agent, ["--log-level", "trace"])
            let doc = try agent.waitFor(15) { number($0, "counters.written") >= 4 }
            #expect(number(doc, "counters.written") >= 4, "\(variant): the agent did not write: \(agent.logText.suffix(2000))")
            let check = try spillway(["check", "--config", agent.config.path])
            let json = try spillway(["status", "--config", agent.config.path, "--json"])
            let text = try spillway(["status", "--config", agent.config.path])
            let nagios = try spillway(["status", "--config", agent.config.path, "--check"])
            #expect(check.status == 0 && check.stdout.contains("url=redis://") && json.status == 0 && text.status == 0, "\(check)")
            #expect(agent.stop() == 0)
            let log = agent.logText
            // Trace logs the services' descriptions (the config in them): redacted there.
            #expect(log.contains("password: Optional(***)"), "\(variant): \(log.prefix(3000))")
            let state = try sqlite(agent.dataDir.appendingPathComponent("buffer.sqlite"),
                                   "for k, v in db.execute('SELECT key, value FROM agent_state'): print(k, v)")
            // One row, `state`: the agent's state as JSON.
            #expect(state.hasPrefix("state {") && state.contains(#""counters":{"#) && state.contains(#""written":"#), "\(state)")
            for (what, output) in [("run log", log), ("check", check.stdout + check.stderr), ("status --json", json.stdout + json.stderr),
                                   ("status", text.stdout + text.stderr), ("status --check", nagios.stdout + nagios.stderr),
                                   ("agent_state", state), ("data_dir", allBytes(under: agent.dataDir))] {
                #expect(!output.contains(password), "\(variant): the password is in the \(what)")
            }
        }
    }

    // MARK: 7. status --check

    /// OK while the agent runs and Redis takes everything; CRITICAL once it stops (its data_dir
    /// lock is free: the state's age does not matter), and for a data_dir that does not exist;
    /// UNKNOWN (3) with no config, and for a buffer that is not a database.
    @Test func checkOKThenCriticalWhenTheAgentIsNotRunningAndUnknown() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        let agent = try AgentProcess(redisPort: server.port)
        try agent.start()
        _ = try agent.waitFor(20) { number($0, "counters.written") > 0 }
        let (ok, okLine) = try agent.check()
        #expect(ok == 0 && okLine.hasPrefix("SPILLWAY OK - breaker closed, backlog ") && okLine.contains(" records | backlog="), "\(okLine)")
        #expect(agent.stop() == 0)
        // Stopped a moment ago: its state is fresh, but nothing holds the lock.
        let (dead, deadLine) = try agent.check()
        #expect(dead == 2 && deadLine.hasPrefix("SPILLWAY CRITICAL - agent not running (no spillway run holds \(agent.dataDir.path)/lock); breaker closed"), "\(deadLine)")
        #expect(value(try agent.status(), "agent.running") as? Bool == false)

        // No data_dir at all.
        let missing = agent.dir.appendingPathComponent("never-created")
        let other = agent.dir.appendingPathComponent("other.toml")
        try "[agent]\ndata_dir = \"\(missing.path)\"\n[[inputs.mem]]\n".write(to: other, atomically: true, encoding: .utf8)
        let none = try spillway(["status", "--config", other.path, "--check"])
        #expect(none.status == 2 && none.stdout.hasPrefix("SPILLWAY CRITICAL - agent not running (data_dir \(missing.path) does not exist)"), "\(none)")

        // No config: UNKNOWN, not CRITICAL.
        let noConfig = try spillway(["status", "--config", agent.dir.appendingPathComponent("nope.toml").path, "--check"])
        #expect(noConfig.status == 3 && noConfig.stdout.hasPrefix("SPILLWAY UNKNOWN - cannot read the configuration: ")
            && noConfig.stdout.contains("config file not found"), "\(noConfig)")
        #expect(noConfig.stdout.split(separator: "\n").count == 1)

        // A state that cannot be read: UNKNOWN.
        let broken = agent.dir.appendingPathComponent("broken")
        try FileManager.default.createDirectory(at: broken, withIntermediateDirectories: true)
        try Data(repeating: 0x41, count: 8192).write(to: broken.appendingPathComponent("buffer.sqlite"))
        try "[agent]\ndata_dir = \"\(broken.path)\"\n[[inputs.mem]]\n".write(to: other, atomically: true, encoding: .utf8)
        let unreadable = try spillway(["status", "--config", other.path, "--check"])
        #expect(unreadable.status == 3 && unreadable.stdout.hasPrefix("SPILLWAY UNKNOWN - cannot read \(broken.path)/buffer.sqlite"), "\(unreadable)")
    }

    /// The breaker open (not yet for critical_open): WARNING, saying so, though the backlog is small.
    @Test func checkWarnsWhileTheBreakerIsOpen() throws {
        let port = try RedisServer.freePort()
        let agent = try AgentProcess(redisPort: port)
        try agent.start()
        _ = try agent.waitFor(20) { (value($0, "breaker.state") as? String) == "open" }
        let (code, line) = try agent.check()
        #expect(code == 1 && line.hasPrefix("SPILLWAY WARNING - breaker open for ") && line.contains("; backlog ") && !line.contains("; breaker "), "\(line)")
        #expect(agent.stop() == 0)
    }

    /// Redis refusing the agent's authentication is CRITICAL at once (not after critical_open), with
    /// the reason. The writer marks such a failure with `last_error_kind = auth` in agent_state; the
    /// writer of this branch does not save it yet, so the test writes it into the running agent's
    /// state (the agent fails against a port where no Redis listens, and never touches that key).
    @Test func checkIsCriticalAtOnceWhenAuthenticationIsRefused() throws {
        // A real Redis that wants a password the config lacks.
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        #expect(try server.cli(["CONFIG", "SET", "requirepass", "s3cret"]) == "OK")
        let agent = try AgentProcess(redisPort: server.port)
        try agent.start()
        let failing = try agent.waitFor(20) { (value($0, "breaker.state") as? String) == "open" && value($0, "last_error.kind") as? String == "auth" }
        #expect(value(failing, "last_error.kind") as? String == "auth", "\(failing)")
        let (code, line) = try agent.check()
        #expect(code == 2 && line.hasPrefix("SPILLWAY CRITICAL - Redis refuses authentication: ") && line.contains("; breaker open for "), "\(line)")
        #expect(agent.stop() == 0)
        // Not running any more: critical for that; the refusal is no longer claimed as current.
        let (_, stopped) = try agent.check()
        #expect(stopped.hasPrefix("SPILLWAY CRITICAL - agent not running") && !stopped.contains("refuses authentication"), "\(stopped)")
    }

    /// A user who may not read the data_dir (0700, the agent's) gets UNKNOWN and exit 1, not "no
    /// agent" and "no backlog" (found by a new user running status as a monitoring user).
    @Test(.enabled(if: getuid() == 0 && FileManager.default.fileExists(atPath: "/usr/bin/setpriv"), "needs root to run status as nobody"))
    func statusAsAUserWhoCannotReadTheDataDirIsUnknown() throws {
        let port = try RedisServer.freePort()
        let agent = try AgentProcess(redisPort: port)
        // nobody must reach the config and the binary; the data_dir stays the agent's (0700).
        chmod(agent.dir.path, 0o755)
        chmod(agent.config.path, 0o644)
        try agent.start()
        _ = try agent.waitFor(20) { number($0, "backlog.records") > 0 }
        func asNobody(_ args: [String]) throws -> Result {
            try spillway(["--reuid=nobody", "--regid=nogroup", "--clear-groups", spillwayBin] + args, executable: "/usr/bin/setpriv")
        }
        let check = try asNobody(["status", "--config", agent.config.path, "--check"])
        #expect(check.status == 3, "\(check)")
        #expect(check.stdout.hasPrefix("SPILLWAY UNKNOWN - cannot read \(agent.dataDir.path): Permission denied"), "\(check.stdout)")
        let text = try asNobody(["status", "--config", agent.config.path])
        #expect(text.status == 1 && text.stderr.contains("Permission denied") && text.stdout.isEmpty, "\(text)")
        #expect(agent.stop() == 0)
    }

    /// Records Redis rejects (WRONGTYPE: the stream's key holds a string) make it CRITICAL.
    @Test func checkIsCriticalWhenRecordsAreRejected() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        _ = try server.cli(["SET", "metrics:h:mem", "not a stream"])
        let agent = try AgentProcess(redisPort: server.port)
        try agent.start()
        let doc = try agent.waitFor(20) { number($0, "counters.rejected") > 0 }
        let rejected = number(doc, "counters.rejected")
        #expect(rejected > 0, "\(doc)")
        let (code, line) = try agent.check()
        #expect(code == 2 && line.hasPrefix("SPILLWAY CRITICAL - ") && line.contains(" records rejected by Redis in this run"), "\(line)")
        // status lists them by key, with Redis's reply.
        let listed = try agent.waitFor(20) { ((value($0, "rejected.keys") as? [[String: Any]])?.first?["records"] as? NSNumber)?.int64Value ?? 0 > 0 }
        let keys = value(listed, "rejected.keys") as? [[String: Any]] ?? []
        #expect(keys.first?["key"] as? String == "metrics:h:mem", "\(listed)")
        #expect((keys.first?["reply"] as? String)?.hasPrefix("WRONGTYPE") == true, "\(listed)")
        let text = try spillway(["status", "--config", agent.config.path]).stdout
        #expect(text.contains("refused for good by Redis, ever, per key") && text.contains("metrics:h:mem\tWRONGTYPE"), "\(text)")
        #expect(agent.stop() == 0)
    }

    // MARK: 8. check

    /// `check` fails (2) for a data_dir that cannot be created, and `run` says why in one line (exit
    /// 1), not a Foundation error dump; the default data_dir is never ./data.
    @Test func checkAndRunRefuseADataDirThatCannotBeCreated() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-datadir-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        // A regular file where a parent directory should be: not creatable, for root too.
        try "x".write(to: dir.appendingPathComponent("afile"), atomically: true, encoding: .utf8)
        try "[agent]\ndata_dir = \"afile/data\"\n[[inputs.mem]]\n".write(to: dir.appendingPathComponent("agent.toml"), atomically: true, encoding: .utf8)
        let config = dir.appendingPathComponent("agent.toml").path
        let check = try spillway(["check", "--config", config])
        #expect(check.status == 2, "\(check)")
        #expect(check.stderr.contains("agent.toml:2: agent.data_dir: \(dir.path)/afile is not a directory, so \(dir.path)/afile/data cannot be created"), "\(check.stderr)")
        let run = try spillway(["run", "--config", config], timeout: 20)
        #expect(run.status == 1, "\(run)")
        #expect(run.stderr.split(separator: "\n").count == 1 && run.stderr.hasPrefix("spillway: ") && run.stderr.contains("\(dir.path)/afile/data"), "\(run.stderr)")
        #expect(!run.stderr.contains("Error Domain"), "\(run.stderr)")
        if getuid() != 0 {
            // A directory this user may not write.
            let closed = dir.appendingPathComponent("closed")
            try FileManager.default.createDirectory(at: closed, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o500])
            try "[agent]\ndata_dir = \"closed/data\"\n[[inputs.mem]]\n".write(to: dir.appendingPathComponent("agent.toml"), atomically: true, encoding: .utf8)
            let c = try spillway(["check", "--config", config])
            #expect(c.status == 2 && c.stderr.contains("is not writable by this user"), "\(c)")
            // A writable data_dir holding a buffer this user may not write (another user's).
            let mine = dir.appendingPathComponent("mine")
            try FileManager.default.createDirectory(at: mine, withIntermediateDirectories: true)
            _ = FileManager.default.createFile(atPath: mine.appendingPathComponent("buffer.sqlite").path, contents: Data(), attributes: [.posixPermissions: 0o400])
            try "[agent]\ndata_dir = \"mine\"\n[[inputs.mem]]\n".write(to: dir.appendingPathComponent("agent.toml"), atomically: true, encoding: .utf8)
            let b = try spillway(["check", "--config", config])
            #expect(b.status == 2 && b.stderr.contains("\(mine.path)/buffer.sqlite is not writable by this user"), "\(b)")
        }
        // The default data_dir (none set) is absolute, never ./data.
        try "[[inputs.mem]]\n".write(to: dir.appendingPathComponent("agent.toml"), atomically: true, encoding: .utf8)
        let d = try spillway(["check", "--config", config], env: ["XDG_STATE_HOME": "\(dir.path)/xdg"], cwd: dir)
        let line = d.stdout.split(separator: "\n").first { $0.contains("data_dir=") } ?? ""
        #expect(line.contains("data_dir=/") && !line.contains("data_dir=./data"), "\(d)")
    }

    /// Warnings for configs that run but do nothing or fail every record: no inputs, a tail glob
    /// matching no file now, raw tail lines under format = "timeseries" (no numeric field), an empty
    /// password_file. Still exit 0. Relative paths are the config file's directory's, whatever the
    /// working directory.
    @Test func checkWarnsForConfigsThatDoNothing() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-warn-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("etc/logs"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try "".write(to: dir.appendingPathComponent("etc/empty.pass"), atomically: true, encoding: .utf8)
        try "line\n".write(to: dir.appendingPathComponent("etc/logs/app.log"), atomically: true, encoding: .utf8)
        let config = dir.appendingPathComponent("etc/agent.toml")
        try """
            [agent]
            data_dir = "state"
            [outputs.redis]
            format = "timeseries"
            password_file = "empty.pass"
            [[inputs.tail]]
            files = ["logs/*.log", "/nonexistent-\(UUID().uuidString)/*.log"]
            """.write(to: config, atomically: true, encoding: .utf8)
        // Run from elsewhere, with the config's path relative to that.
        let r = try spillway(["check", "--config", "etc/agent.toml"], cwd: dir)
        #expect(r.status == 0, "\(r)")
        let warnings = r.stdout.split(separator: "\n").filter { $0.hasPrefix("warning: ") }
        #expect(warnings.count == 3, "\(r.stdout)")
        #expect(r.stdout.contains("warning: etc/agent.toml:5: outputs.redis.password_file: \"\(dir.path)/etc/empty.pass\" is empty: the agent connects without AUTH"), "\(r.stdout)")
        #expect(r.stdout.contains("inputs.tail[0].files: \"/nonexistent-") && r.stdout.contains("matches no file now"), "\(r.stdout)")
        #expect(!r.stdout.contains("\(dir.path)/etc/logs/*.log\" matches no file"), "\(r.stdout)")
        #expect(r.stdout.contains("inputs.tail[0].format: format \"raw\" gives records with no numeric field"), "\(r.stdout)")
        #expect(r.stdout.contains("data_dir=\(dir.path)/etc/state "), "\(r.stdout)")
        #expect(r.stdout.contains("files=\(dir.path)/etc/logs/*.log,"), "\(r.stdout)")

        try "[agent]\nhostname = \"h\"\n".write(to: config, atomically: true, encoding: .utf8)
        let empty = try spillway(["check", "--config", config.path])
        #expect(empty.status == 0 && empty.stdout.contains("warning: \(config.path): inputs: no inputs are declared"), "\(empty)")
    }

    // MARK: 9. status tells the current truth

    /// The last error with its outage's first failure; after a restart, the earlier run's error is
    /// marked as such; JSON without escaped slashes; and the counters' identity once the backlog is
    /// empty: collected + backlog_at_start = written + replayed + duplicates + rejected + dropped.
    @Test func lastErrorRunsAndTheCountersIdentity() throws {
        let port = try RedisServer.freePort()
        let agent = try AgentProcess(redisPort: port)
        try agent.start()
        let outage = try agent.waitFor(20) { (value($0, "breaker.state") as? String) == "open" && number($0, "backlog.records") > 4 }
        let first = value(outage, "last_error.first_failure_at") as? String ?? ""
        let at = value(outage, "last_error.at") as? String ?? ""
        #expect(!first.isEmpty && first <= at, "\(outage)")
        #expect(value(outage, "last_error.from_earlier_run") as? Bool == false, "\(outage)")
        let raw = try spillway(["status", "--config", agent.config.path, "--json"]).stdout
        #expect(!raw.contains("\\/") && raw.contains("\"data_dir\" : \"\(agent.dataDir.path)\""), "\(raw)")
        #expect(agent.stop() == 0)
        let stopped = try agent.status()
        let firstRun = (collected: number(stopped, "counters.collected"), backlog: number(stopped, "backlog.records"))
        #expect(firstRun.backlog > 0 && number(stopped, "counters.backlog_at_start") == 0, "\(stopped)")
        // The first run's counters: everything it collected is still in the buffer.
        #expect(firstRun.collected == firstRun.backlog + number(stopped, "counters.dropped"), "\(stopped)")

        let server = try RedisServer(port: port)
        defer { server.stop(); server.removeFiles() }
        try agent.start()
        let drained = try agent.waitFor(15) { number($0, "backlog.records") == 0 && number($0, "counters.replayed") > 0 }
        #expect(number(drained, "backlog.records") == 0, "\(drained)")
        #expect(number(drained, "counters.backlog_at_start") == firstRun.backlog, "\(drained)")
        // The error is the first run's: marked as such, in JSON and text.
        #expect(value(drained, "last_error.from_earlier_run") as? Bool == true, "\(drained)")
        let text = try spillway(["status", "--config", agent.config.path]).stdout
        #expect(text.split(separator: "\n").contains { $0.hasPrefix("last error ") && $0.hasSuffix("[from an earlier run]") }, "\(text)")
        #expect(agent.stop() == 0)
        let c = try agent.status()
        #expect(number(c, "backlog.records") == 0, "\(c)")
        func n(_ k: String) -> Int64 { number(c, "counters.\(k)") }
        #expect(n("collected") > 0 && n("replayed") >= firstRun.backlog, "\(c)")
        #expect(n("collected") + n("backlog_at_start") == n("written") + n("replayed") + n("duplicates") + n("rejected") + n("dropped"), "\(c)")
        // Redis holds each record once: what this run wrote and replayed, no more (the agent's own
        // records included).
        let inRedis = try streamTimestamps(server, "metrics:h:mem").count + streamTimestamps(server, "metrics:h:system").count
            + internalInRedis(server)
        #expect(Int64(inRedis) == n("written") + n("replayed"), "\(inRedis) in Redis: \(c)")
    }

    /// A data_dir the previous version wrote (its state as key/value rows in agent_state, every key
    /// it saved): status reads it as before, in text, JSON and --check.
    @Test func statusReadsTheStateThePreviousVersionSaved() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-old-state-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let rows: [(String, String)] = [
            ("breaker.state", "open"), ("breaker.since_ns", "1750000000000000000"), ("breaker.consecutive_failures", "4"),
            ("counters.written", "120"), ("counters.spilled", "30"), ("counters.replayed", "5"), ("counters.dropped", "2"),
            ("counters.duplicates", "1"), ("counters.rejected", "3"), ("counters.collected", "161"), ("counters.input_errors", "6"),
            ("counters.backlog_at_start", "10"), ("updated_ns", "1750000060000000000"), ("replay.rate", "12.5"), ("pid", "4242"),
            ("last_error", "OOM command not allowed"), ("last_error_kind", "transient"), ("last_error_ns", "1750000050000000000"),
            ("last_error.run", "4242-1749990000000000000"), ("last_error.first_ns", "1750000000000000000"),
            ("run.id", "4243-1749999000000000000"), ("run.started_ns", "1749999000000000000"), ("last_success_ns", "1749999990000000000"),
            ("inputs", #"[{"input":"cpu","at":"agent.toml:3","last_gather_ns":1750000059000000000,"duration_ns":1500000,"errors":0,"records":100}]"#),
        ]
        let values = rows.map { "('\($0.0)', '\($0.1)')" }.joined(separator: ", ")
        _ = try sqlite(dir.appendingPathComponent("buffer.sqlite"), """
            db.executescript('''
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE batches (id INTEGER PRIMARY KEY AUTOINCREMENT, spilled_ns INTEGER NOT NULL, records INTEGER NOT NULL, bytes INTEGER NOT NULL, payload BLOB NOT NULL);
            CREATE TABLE batch_keys (batch_id INTEGER NOT NULL, key BLOB NOT NULL, records INTEGER NOT NULL, PRIMARY KEY (batch_id, key)) WITHOUT ROWID;
            CREATE TABLE dropped (key BLOB PRIMARY KEY, records INTEGER NOT NULL) WITHOUT ROWID;
            CREATE TABLE agent_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            INSERT INTO meta VALUES ('schema_version', '1');
            ''')
            db.executemany('INSERT INTO agent_state (key, value) VALUES (?, ?)', [\(values)])
            db.commit()
            """)

        let json = try spillway(["status", "--data-dir", dir.path, "--json"])
        #expect(json.status == 0, "\(json)")
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect(value(doc, "breaker.state") as? String == "open" && number(doc, "breaker.consecutive_failures") == 4)
        #expect(value(doc, "breaker.since") as? String == "2025-06-15T15:06:40Z")
        #expect(value(doc, "agent.running") as? Bool == false && number(doc, "agent.pid") == 4242)
        #expect(value(doc, "agent.updated_at") as? String == "2025-06-15T15:07:40Z")
        #expect(value(doc, "agent.run_started_at") as? String == "2025-06-15T14:50:00Z")
        #expect(value(doc, "last_error.message") as? String == "OOM command not allowed")
        #expect(value(doc, "last_error.kind") as? String == "transient" && value(doc, "last_error.at") as? String == "2025-06-15T15:07:30Z")
        #expect(value(doc, "last_error.first_failure_at") as? String == "2025-06-15T15:06:40Z")
        #expect(value(doc, "last_error.from_earlier_run") as? Bool == true && value(doc, "last_error.resolved") as? Bool == false)
        #expect(value(doc, "last_success_at") as? String == "2025-06-15T15:06:30Z")
        // The saved rate (12.5, read by AgentStateTests) is not shown: no agent runs, so nothing drains.
        #expect((value(doc, "backlog.replay_rate") as? NSNumber)?.doubleValue == 0 && value(doc, "backlog.eta_seconds") is NSNull)
        let counters = ["collected": 161, "backlog_at_start": 10, "written": 120, "replayed": 5, "duplicates": 1, "rejected": 3,
                        "dropped": 2, "spilled": 30, "input_errors": 6] as [String: Int64]
        for (name, n) in counters { #expect(number(doc, "counters.\(name)") == n, "\(name)") }
        #expect(number(doc, "dropped.total") == 2 && number(doc, "rejected.total") == 3)
        let inputs = value(doc, "inputs") as? [[String: Any]] ?? []
        #expect(inputs.count == 1 && inputs.first?["input"] as? String == "cpu" && (inputs.first?["records"] as? NSNumber)?.int64Value == 100)
        #expect((inputs.first?["duration_seconds"] as? NSNumber)?.doubleValue == 0.0015 && inputs.first?["last_gather_at"] as? String == "2025-06-15T15:07:39Z")

        let text = try spillway(["status", "--data-dir", dir.path]).stdout
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.hasPrefix("agent      not running, state saved ") }, "\(text)")
        #expect(lines.contains { $0.hasPrefix("breaker    open since 2025-06-15T15:06:40Z (") && $0.hasSuffix(" s), 4 consecutive failures") }, "\(text)")
        #expect(lines.contains { $0.hasPrefix("last error OOM command not allowed (at 2025-06-15T15:07:30Z, ")
                && $0.hasSuffix(" s ago; failing since 2025-06-15T15:06:40Z) [from an earlier run]") }, "\(text)")
        #expect(lines.contains("counters   collected=161 backlog_at_start=10 written=120 replayed=5 duplicates=1 rejected=3 dropped=2 spilled=30 input_errors=6"), "\(text)")
        #expect(lines.contains("dropped    2 this run"), "\(text)")
        #expect(lines.contains { $0.hasPrefix("  cpu\tagent.toml:3\tlast 2025-06-15T15:07:39Z (") && $0.hasSuffix("\tduration 1.500 ms\terrors 0\trecords 100") }, "\(text)")

        let check = try spillway(["status", "--data-dir", dir.path, "--check"])
        #expect(check.status == 2, "\(check)")
        #expect(check.stdout.hasPrefix("SPILLWAY CRITICAL - agent not running (no spillway run holds \(dir.path)/lock); 3 records rejected by Redis in this run; 2 records dropped in this run; breaker open for "), "\(check)")
        #expect(check.stdout.hasSuffix("; backlog 0 records | backlog=0;100000;;0 rejected=3;;0;0 dropped=2;;0;0\n"), "\(check)")
    }
}

import Foundation
import SpillwayTestSupport
import Testing

/// SIGHUP reads the configuration again: added inputs start, removed ones stop, changed ones restart,
/// and nothing in flight is lost or doubled; an invalid configuration is refused and the running one
/// stays.
@Suite(.serialized) struct Reload {
    @Test func threeReloadsUnderLoadLoseAndDoubleNothing() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        let logs = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-reload-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: logs, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: logs) }
        let app = logs.appendingPathComponent("app.log").path
        let agent = try tailingAgent(redisPort: server.port, app: app, inputs: "[[inputs.mem]]")
        let base = try String(contentsOf: agent.config, encoding: .utf8)
        try agent.start()
        let pid = try #require(agent.process?.processIdentifier)

        // 10,000 lines a second for 6 s, in rounds of 100 every 10 ms.
        let rounds = 600, perRound = 100
        let done = DispatchSemaphore(value: 0)
        Thread {
            for r in 0..<rounds {
                appendLines(app, from: r * perRound, count: perRound)
                usleep(10_000)
            }
            done.signal()
        }.start()

        func reload(_ text: String) throws {
            try text.write(to: agent.config, atomically: true, encoding: .utf8)
            kill(pid, SIGHUP)
        }
        func xlen(_ key: String) -> Int { Int((try? server.cli(["XLEN", key])) ?? "") ?? 0 }

        usleep(1_200_000)
        // 1: an input added.
        try reload(base + "\n[[inputs.system]]\ninterval = \"100ms\"\n")
        usleep(1_200_000)
        // An invalid configuration: refused, the running one (with system) stays.
        try reload(base + "\n[[inputs.system]]\ninterval = \"100ms\"\n[[inputs.sytem]]\n")
        usleep(600_000)
        // 2: an input removed (mem), the tail input changed (a tag).
        let withoutMem = base.replacingOccurrences(of: "[[inputs.mem]]", with: "")
            .replacingOccurrences(of: "from_beginning = true", with: "from_beginning = true\ntags = { reload = \"2\" }")
        try reload(withoutMem + "\n[[inputs.system]]\ninterval = \"100ms\"\n")
        usleep(1_200_000)
        let memAfterRemoval = xlen("metrics:h:mem")
        // 3: the output's and the agent's settings changed.
        try reload(withoutMem.replacingOccurrences(of: "flush_interval = \"100ms\"", with: "flush_interval = \"50ms\"")
            .replacingOccurrences(of: "connect_timeout = \"200ms\"", with: "connect_timeout = \"300ms\"") + "\n[[inputs.system]]\ninterval = \"100ms\"\n")
        #expect(done.wait(timeout: .now() + 30) == .success, "the writer did not finish")

        let expected = (0..<(rounds * perRound)).map { "line-\(String(format: "%08d", $0)) " + String(repeating: "x", count: 96) }
        expectSameLines(try waitForMessages(server, "metrics:h:log", prefix: "line-", count: expected.count, seconds: 60), expected)
        let doc = try agent.waitFor(20) { number($0, "backlog.records") == 0 }
        #expect(agent.stop() == 0)

        let log = agent.logText
        #expect(log.components(separatedBy: "configuration reloaded").count == 4, "\(log)")
        #expect(log.contains("reload refused: ") && log.contains("inputs.sytem") && log.contains("reload refused: the running configuration stays"), "\(log)")
        // The added input ran; the removed one stopped with its reload.
        #expect(xlen("metrics:h:system") > 0)
        #expect(memAfterRemoval > 0 && xlen("metrics:h:mem") == memAfterRemoval)
        // Lines read after the second reload carry its tag.
        let tagged = try server.cli(["--raw", "XREVRANGE", "metrics:h:log", "+", "-", "COUNT", "1"])
        #expect(tagged.contains("tag_reload\n2"), "\(tagged)")
        // The counters went on across the reloads: every record collected was written once.
        let after = try agent.status()
        let collected = number(after, "counters.collected")
        let settled = ["written", "replayed", "duplicates", "rejected", "dropped"].map { number(after, "counters.\($0)") }.reduce(0, +)
        #expect(collected >= Int64(expected.count) && collected + number(after, "counters.backlog_at_start") == settled, "\(after)")
        #expect(number(after, "counters.duplicates") == 0 && number(after, "counters.dropped") == 0, "\(doc)")
    }

    /// SIGHUP that changes data_dir is refused (the lock, the buffer and the offsets live there).
    @Test func dataDirChangeIsRefused() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        let agent = try AgentProcess(redisPort: server.port)
        try agent.start()
        let pid = try #require(agent.process?.processIdentifier)
        _ = try agent.waitFor(20) { number($0, "counters.written") >= 2 }
        let text = try String(contentsOf: agent.config, encoding: .utf8)
        try text.replacingOccurrences(of: agent.dataDir.path, with: agent.dataDir.path + "-moved").write(to: agent.config, atomically: true, encoding: .utf8)
        kill(pid, SIGHUP)
        let deadline = Date().addingTimeInterval(10)
        while !agent.logText.contains("reload refused"), Date() < deadline { usleep(50_000) }
        let before = number(try agent.status(), "counters.written")
        _ = try agent.waitFor(20) { number($0, "counters.written") > before + 2 }
        #expect(agent.stop() == 0)
        #expect(agent.logText.contains("data_dir changed from \(agent.dataDir.path) to \(agent.dataDir.path)-moved"), "\(agent.logText)")
        #expect(!FileManager.default.fileExists(atPath: agent.dataDir.path + "-moved"))
    }
}

/// Under systemd (`Type=notify`): READY=1 once `run` listens for signals, RELOADING=1 then READY=1
/// around a reload, STOPPING=1 at a stop, as datagrams to NOTIFY_SOCKET.
@Test func notifiesSystemdOfReadinessReloadsAndStop() throws {
    let server = try RedisServer()
    defer { server.stop(); server.removeFiles() }
    let agent = try AgentProcess(redisPort: server.port)
    let socketPath = agent.dir.appendingPathComponent("notify.sock").path
    let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
    try #require(fd >= 0)
    defer { close(fd) }
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(socketPath.utf8) + [0]) }
    let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
    try #require(bound == 0)
    var tv = timeval(tv_sec: 10, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    func receive() -> String {
        var buf = [UInt8](repeating: 0, count: 512)
        let n = recv(fd, &buf, buf.count, 0)
        return n > 0 ? String(decoding: buf[0..<n], as: UTF8.self) : "(nothing within 10 s)"
    }

    let p = Process()
    p.executableURL = URL(fileURLWithPath: spillwayBin)
    p.arguments = ["run", "--config", agent.config.path]
    p.environment = ProcessInfo.processInfo.environment.merging(["NOTIFY_SOCKET": socketPath]) { $1 }
    p.standardError = try FileHandle(forWritingTo: agent.log)
    p.standardOutput = FileHandle.nullDevice
    try p.run()
    defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
    #expect(receive() == "READY=1\nSTATUS=running")
    kill(p.processIdentifier, SIGHUP)
    let reloading = receive()
    #expect(reloading.hasPrefix("RELOADING=1\nMONOTONIC_USEC="), "\(reloading)")
    #expect(receive() == "READY=1\nSTATUS=running")
    kill(p.processIdentifier, SIGTERM)
    #expect(receive() == "STOPPING=1")
    p.waitUntilExit()
    #expect(p.terminationStatus == 0, "\(agent.logText)")
}

/// A SIGHUP 30 and 60 ms after the start (while the config is read, before `run` listens: it used
/// to end the process with status 129) does not end it. (The few milliseconds between exec and
/// main are the dynamic loader's: under systemd, Type=notify covers them.)
@Test func aReloadRightAfterTheStartDoesNotKill() throws {
    let server = try RedisServer()
    defer { server.stop(); server.removeFiles() }
    let agent = try AgentProcess(redisPort: server.port)
    try agent.start()
    let pid = try #require(agent.process?.processIdentifier)
    usleep(30_000)
    kill(pid, SIGHUP)
    usleep(30_000)
    kill(pid, SIGHUP)
    // The state is saved at the first delivery, then every 5 s: 20 s leaves room for a loaded CI.
    let doc = try agent.waitFor(20) { number($0, "counters.written") >= 2 }
    #expect(number(doc, "counters.written") >= 2, "\(doc)\n\(agent.logText)")
    let entries = Int(try server.cli(["XLEN", "metrics:h:mem"]).trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
    #expect(entries >= 1, "\(agent.logText)")
    #expect(agent.stop() == 0, "\(agent.logText)")
}

/// After a refused reload the agent runs on, on its old configuration: `status --data-dir` reads its
/// state without the (broken) file, where plain `status` can only say the file is broken.
@Test func statusWithDataDirReadsAnAgentWhoseConfigBrokeSince() throws {
    let server = try RedisServer()
    defer { server.stop(); server.removeFiles() }
    let agent = try AgentProcess(redisPort: server.port)
    try agent.start()
    _ = try agent.waitFor(20) { number($0, "counters.written") >= 2 }
    try (String(contentsOf: agent.config, encoding: .utf8) + "\n[[inputs.sytem]]\n").write(to: agent.config, atomically: true, encoding: .utf8)
    kill(try #require(agent.process?.processIdentifier), SIGHUP)
    let deadline = Date().addingTimeInterval(10)
    while !agent.logText.contains("reload refused"), Date() < deadline { usleep(50_000) }
    let plain = try spillway(["status", "--config", agent.config.path, "--check"])
    #expect(plain.status == 3 && plain.stdout.contains("SPILLWAY UNKNOWN - cannot read the configuration") && plain.stdout.contains("--data-dir"), "\(plain.stdout)")
    let withDir = try spillway(["status", "--config", agent.config.path, "--check", "--data-dir", agent.dataDir.path])
    #expect(withDir.status == 0 && withDir.stdout.hasPrefix("SPILLWAY OK"), "\(withDir.stdout)\(withDir.stderr)")
    let text = try spillway(["status", "--data-dir", agent.dataDir.path, "--json"])
    #expect(text.status == 0 && text.stdout.contains("\"running\" : true"), "\(text.stdout)\(text.stderr)")
    #expect(agent.stop() == 0)
}

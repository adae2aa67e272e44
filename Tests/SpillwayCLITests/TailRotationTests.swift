import Foundation
import SpillwayTestSupport
import Testing

/// logrotate's `copytruncate` with `rotate 3`, run between two lines of the writer: the oldest copy
/// removed, the others renamed up (app.log.1 -> app.log.2 ...), app.log copied to app.log.1, then
/// truncated in place (the writer keeps its descriptor).
func copytruncateRotation(_ app: String) -> (LogWriter) -> Void {
    { _ in
        unlink(app + ".3")
        rename(app + ".2", app + ".3")
        rename(app + ".1", app + ".2")
        try? FileManager.default.copyItem(atPath: app, toPath: app + ".1")
        _ = truncate(app, 0)
    }
}

/// logrotate's `create` with `rotate 3`: renamed up, app.log renamed to app.log.1, and the writer
/// reopens app.log (a new file).
func renameRotation(_ app: String) -> (LogWriter) -> Void {
    { w in
        unlink(app + ".3")
        rename(app + ".2", app + ".3")
        rename(app + ".1", app + ".2")
        rename(app, app + ".1")
        w.reopen()
    }
}

/// An agent following `logs/app.log*` (the pattern matches logrotate's copies; `exact`: only
/// `logs/app.log`) against a real redis-server.
func rotationAgent(_ server: RedisServer, exact: Bool = false) throws -> (AgentProcess, String) {
    // (maxlen = 0: the stream is not trimmed, every line stays to be counted.)
    let agent = try AgentProcess(redisPort: server.port, inputs: "")
    let logs = agent.dir.appendingPathComponent("logs")
    try FileManager.default.createDirectory(at: logs, withIntermediateDirectories: true)
    let app = logs.appendingPathComponent("app.log").path
    _ = FileManager.default.createFile(atPath: app, contents: nil)
    try (String(contentsOf: agent.config, encoding: .utf8) + "\n" + tailInput([exact ? app : app + "*"], "maxlen = 0")).write(to: agent.config, atomically: true, encoding: .utf8)
    return (agent, app)
}

@Suite(.serialized) struct TailRotation {
    enum Agent: String, CaseIterable {
        case running, sigterm, sigkill
        /// The same, `files` matching app.log only (the copy is found next to it).
        case sigtermExactPath, sigkillExactPath
        /// The agent runs; Redis is SIGKILLed before each rotation and started again after it.
        case redisKilled
    }

    /// copytruncate four times while a writer appends 300 lines/s, `files` matching the copies, with
    /// the agent running, SIGTERMed across each rotation, or SIGKILLed (across the rotation, or just
    /// after it while the copy is being read), or with Redis killed across each rotation; then twice in
    /// a row with the agent running, the second time of a file shorter than its fingerprint: every line
    /// in Redis once, in order. The stopped and killed cases also with `files` matching app.log only.
    @Test(arguments: Agent.allCases) func copytruncateRunningStoppedAndKilled(_ mode: Agent) throws {
        let port = try RedisServer.freePort()
        let redisDir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-rotation-redis-\(UUID().uuidString)")
        let aof = ["--appendonly", "yes", "--appendfsync", "always"]
        var server = try RedisServer(port: port, dir: redisDir, args: aof)
        defer { server.stop(); server.removeFiles() }
        let (agent, app) = try rotationAgent(server, exact: mode == .sigtermExactPath || mode == .sigkillExactPath)
        defer { try? FileManager.default.removeItem(at: agent.dir) }
        try agent.start()
        defer { if agent.process != nil { agent.sigkill() } }
        _ = try agent.waitFor(20) { ($0["files"] as? [Any])?.count ?? 0 >= 1 }
        let w = LogWriter(path: app, prefix: "c", perSecond: 300)
        w.start()
        usleep(700_000)
        for round in 0..<4 {
            switch mode {
            case .running:
                w.between(copytruncateRotation(app))
                usleep(700_000)
            case .redisKilled:
                server.crash()
                usleep(300_000)
                w.between(copytruncateRotation(app))
                usleep(500_000)
                server = try RedisServer(port: port, dir: redisDir, args: aof)
                usleep(700_000)
            case .sigterm, .sigtermExactPath:
                #expect(agent.stop() == 0)
                usleep(200_000)
                w.between(copytruncateRotation(app))
                usleep(300_000)
                try agent.start()
                usleep(900_000)
            case .sigkill, .sigkillExactPath:
                if round % 2 == 0 {
                    agent.sigkill()
                    usleep(200_000)
                    w.between(copytruncateRotation(app))
                    usleep(300_000)
                } else {
                    w.between(copytruncateRotation(app))
                    usleep(150_000)
                    agent.sigkill()
                }
                try agent.start()
                usleep(900_000)
            }
        }
        // A file shorter than its fingerprint (3 lines, 156 bytes) rotated while the agent runs.
        w.between { w in
            copytruncateRotation(app)(w)
            for _ in 0..<3 { w.writeLine() }
            usleep(500_000)
            copytruncateRotation(app)(w)
        }
        usleep(700_000)
        let written = w.stop()
        let got = try waitForMessages(server, "metrics:h:log", prefix: "c-", count: written.count, seconds: 60)
        expectSameLines(got, written)
        print("copytruncate (\(mode.rawValue)): \(written.count) lines written, \(got.count) entries, \(Set(got).count) distinct")
        if got.count != Set(got).count {
            var seenLines = Set<String>(), dups: [Int] = []
            for (i, l) in got.enumerated() where !seenLines.insert(l).inserted { dups.append(i) }
            print("doubled lines in Redis at entries \(dups.first!)...\(dups.last!): \(got[dups.first!].prefix(8))...\(got[dups.last!].prefix(8))")
            print("the agent's notices:\n" + agent.logText.split(separator: "\n").filter { $0.contains("notice") }.prefix(60).joined(separator: "\n"))
        }
        #expect(written.count > 600)
        // Every rotation left its copy, and the copies' lines were not read again under their names.
        #expect(FileManager.default.fileExists(atPath: app + ".3"))
        #expect(try server.cli(["--raw", "XRANGE", "metrics:h:log", "-", "+"]).split(separator: "\n").allSatisfy { !$0.hasSuffix(".log.1") && !$0.hasSuffix(".log.2") })
        #expect(agent.stop() == 0)
    }

    /// Rename rotations (logrotate `create`, `rotate 3`) while a writer appends; once with the agent
    /// stopped while 100,000 lines (5 MB, more than one poll reads from a file) pile up in the file
    /// that is then rotated away: every line once, and in order (the old file's before the new one's).
    @Test func renameRotationWithALargeBacklogKeepsOrder() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        let (agent, app) = try rotationAgent(server)
        defer { try? FileManager.default.removeItem(at: agent.dir) }
        try agent.start()
        defer { if agent.process != nil { agent.sigkill() } }
        _ = try agent.waitFor(20) { ($0["files"] as? [Any])?.count ?? 0 >= 1 }
        let w = LogWriter(path: app, prefix: "r", perSecond: 300)
        w.start()
        usleep(700_000)
        w.between(renameRotation(app))
        usleep(700_000)
        #expect(agent.stop() == 0)
        w.between { w in
            for _ in 0..<100_000 { w.writeLine() }
            renameRotation(app)(w)
        }
        usleep(300_000)
        try agent.start()
        usleep(1_500_000)
        w.between(renameRotation(app))
        usleep(700_000)
        let written = w.stop()
        let got = try waitForMessages(server, "metrics:h:log", prefix: "r-", count: written.count, seconds: 90)
        expectSameLines(got, written)
        #expect(written.count > 100_000)
        #expect(agent.stop() == 0)
    }
}

import Foundation
import SpillwayTestSupport
import Testing

/// Whether `pid` is a live process (a zombie counts as gone).
private func alive(_ pid: Int32) -> Bool {
    guard pid > 0, kill(pid, 0) == 0 else { return false }
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return false }
    let state = stat[stat.index(close, offsetBy: 2)]
    return state != "Z" && state != "X"
}

/// Waits (at most `seconds`) until none of `pids` is alive; returns those still alive.
private func stillAlive(_ pids: [Int32], seconds: Double = 5) -> [Int32] {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline, pids.contains(where: alive) { usleep(20_000) }
    return pids.filter(alive)
}

/// The first column of each line of `file`, as pids.
private func pids(_ file: URL) -> [Int32] {
    ((try? String(contentsOf: file, encoding: .utf8)) ?? "").split(separator: "\n").compactMap { Int32($0.split(separator: " ").first ?? "") }
}

/// Waits (at most `seconds`) until `file` lists at least `count` pids.
private func waitForPids(_ file: URL, count: Int, seconds: Double = 10) -> [Int32] {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline, pids(file).count < count { usleep(20_000) }
    return pids(file)
}

private func script(_ dir: URL, _ name: String, _ body: String) throws -> String {
    let url = dir.appendingPathComponent(name)
    try ("#!/bin/sh\n" + body + "\n").write(to: url, atomically: true, encoding: .utf8)
    chmod(url.path, 0o755)
    return url.path
}

/// exec and execd inside a real `spillway run`, writing to a real Redis.
@Suite(.serialized) struct ExecAgent {
    @Test func execdLinesReachRedisAndTheProcessStopsWithTheAgent() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-execd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let pidFile = dir.appendingPathComponent("pids")
        // Its pid and a child's; a bad line once; then a record every 50 ms.
        let program = try script(dir, "ticker.sh", """
            echo $$ >> \(pidFile.path)
            sleep 60 & echo $! >> \(pidFile.path)
            echo 'this is not line protocol'
            n=0
            while [ $n -lt 2000 ]; do n=$((n+1)); echo "ticker,src=sh n=${n}i,mode=\\"$MODE\\""; sleep 0.05; done
            """)
        let agent = try AgentProcess(redisPort: server.port, inputs: """
            [[inputs.execd]]
            command = ["\(program)"]
            env = { MODE = "test" }
            """)
        try agent.start()
        let started = waitForPids(pidFile, count: 2)
        #expect(started.count == 2)
        let entries = try waitForEntries(server, "metrics:h:ticker", count: 5)
        #expect(entries.count >= 5)
        let first = try server.cli(["--raw", "XRANGE", "metrics:h:ticker", "-", "+", "COUNT", "1"])
        #expect(first.contains("n\n1\n") && first.contains("mode\ntest") && first.contains("tag_src\nsh"), "\(first)")
        let doc = try agent.waitFor(20) { number($0, "counters.input_errors") >= 1 }
        #expect(number(doc, "counters.input_errors") == 1, "\(doc)")
        #expect(agent.stop() == 0)
        #expect(stillAlive(started).isEmpty, "left running after the agent stopped: \(started.filter(alive))")
        let log = agent.logText
        #expect(log.contains("process started") && log.contains("process stopped"), "\(log)")
        #expect(log.contains(#"this is not line protocol"#), "the bad line is quoted: \(log)")
    }

    @Test func execdIsStartedAgainWithBackoff() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-execd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let starts = dir.appendingPathComponent("starts")
        let program = try script(dir, "once.sh", """
            echo "$$ $(date +%s%N)" >> \(starts.path)
            echo 'brief v=1i'
            exit 1
            """)
        let agent = try AgentProcess(redisPort: server.port, inputs: """
            [[inputs.execd]]
            command = ["\(program)"]
            restart_delay = "200ms"
            max_restart_delay = "800ms"
            """)
        try agent.start()
        defer { agent.stop() }
        _ = waitForPids(starts, count: 5, seconds: 15)
        let times = ((try? String(contentsOf: starts, encoding: .utf8)) ?? "").split(separator: "\n").compactMap { Int64($0.split(separator: " ").last ?? "") }
        #expect(times.count >= 5)
        // Gaps between starts: 200, 400, 800, 800 ms (doubling, capped), plus start-up time.
        let gaps = zip(times, times.dropFirst()).map { Double($1 - $0) / 1e6 }.prefix(4)
        let expected: [Double] = [200, 400, 800, 800]
        for (gap, want) in zip(gaps, expected) {
            #expect(gap >= want * 0.95 && gap < want + 700, "gaps \(gaps)")
        }
        let entries = try waitForEntries(server, "metrics:h:brief", count: 5)
        #expect(entries.count >= 5)
        #expect(agent.logText.contains("process ended; starting it again"))
    }

    @Test func aReloadReplacesTheProcessAndLeavesNoOrphan() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-execd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let pidFile = dir.appendingPathComponent("pids")
        // Ignores SIGTERM (so does its child): only SIGKILL after kill_grace ends them.
        let program = try script(dir, "stubborn.sh", """
            trap '' TERM
            echo $$ >> \(pidFile.path)
            sleep 60 & echo $! >> \(pidFile.path)
            while :; do echo "stub,gen=$GEN v=1i"; sleep 0.1; done
            """)
        let inputs = { (gen: String) in """
            [[inputs.execd]]
            command = ["\(program)"]
            kill_grace = "300ms"
            env = { GEN = "\(gen)" }
            """ }
        let agent = try AgentProcess(redisPort: server.port, inputs: inputs("1"))
        try agent.start()
        let pid = try #require(agent.process?.processIdentifier)
        let first = waitForPids(pidFile, count: 2)
        #expect(first.count == 2)
        let base = try String(contentsOf: agent.config, encoding: .utf8)
        try base.replacingOccurrences(of: "GEN = \"1\"", with: "GEN = \"2\"").write(to: agent.config, atomically: true, encoding: .utf8)
        kill(pid, SIGHUP)
        let both = waitForPids(pidFile, count: 4)
        #expect(both.count == 4)
        #expect(stillAlive(first).isEmpty, "the first process outlived the reload: \(first.filter(alive))")
        let second = Array(both.dropFirst(2))
        #expect(second.allSatisfy(alive))
        // The new process's records arrive.
        let deadline = Date().addingTimeInterval(10)
        var tagged = ""
        while Date() < deadline {
            tagged = try server.cli(["--raw", "XREVRANGE", "metrics:h:stub", "+", "-", "COUNT", "1"])
            if tagged.contains("tag_gen\n2") { break }
            usleep(100_000)
        }
        #expect(tagged.contains("tag_gen\n2"), "\(tagged)")
        #expect(agent.stop() == 0)
        #expect(stillAlive(second).isEmpty, "left running after the agent stopped: \(second.filter(alive))")
        #expect(agent.logText.contains("configuration reloaded"))
    }

    @Test func execRecordsReachRedisAndFailuresAreCounted() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-exec-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let agent = try AgentProcess(redisPort: server.port, inputs: """
            [[inputs.exec]]
            command = ["/bin/sh", "-c", "echo 'probe,kind=ok v=1.5,n=2i'"]
            interval = "200ms"
            [[inputs.exec]]
            command = ["/bin/sh", "-c", "echo 'failing v=1'; echo 'no luck' >&2; exit 2"]
            interval = "200ms"
            [[inputs.mem]]
            key = "own:mem"
            """)
        try agent.start()
        let entries = try waitForEntries(server, "metrics:h:probe", count: 3)
        #expect(entries.count >= 3)
        let doc = try agent.waitFor(20) { number($0, "counters.input_errors") >= 3 }
        #expect(number(doc, "counters.input_errors") >= 3)
        #expect(agent.stop() == 0)
        #expect(try server.cli(["EXISTS", "metrics:h:failing"]).trimmingCharacters(in: .whitespacesAndNewlines) == "0")
        // The collector's input after the exec ones keeps its own route (key).
        #expect(Int(try server.cli(["XLEN", "own:mem"]).trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0 > 0)
        #expect(try server.cli(["EXISTS", "metrics:h:mem"]).trimmingCharacters(in: .whitespacesAndNewlines) == "0")
        let first = try server.cli(["--raw", "XRANGE", "metrics:h:probe", "-", "+", "COUNT", "1"])
        #expect(first.contains("v\n1.5") && first.contains("n\n2") && first.contains("tag_kind\nok"), "\(first)")
        let log = agent.logText
        // Logged once for the episode, with its stderr.
        #expect(log.components(separatedBy: "exited with status 2").count == 2, "\(log)")
        #expect(log.contains("no luck"), "\(log)")
    }
}

/// Waits (at most `seconds`) until the stream `key` holds `count` entries; returns its length.
private func waitForEntries(_ server: RedisServer, _ key: String, count: Int, seconds: Double = 15) throws -> [Int] {
    let deadline = Date().addingTimeInterval(seconds)
    var n = 0
    while Date() < deadline {
        n = Int(try server.cli(["XLEN", key]).trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        if n >= count { break }
        usleep(100_000)
    }
    return Array(0..<n)
}

import Foundation
import SpillwayTestSupport
import Testing

/// The promise where real hosts break it: a second agent on one data_dir, …
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
        _ = try first.waitFor(10) { ($0["agent"] as? [String: Any])?["running"] as? Bool == true }

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
}

import Foundation
import SpillwayTestSupport
import Testing

/// Parses the final `writer` log line's counters (`writer.written=N` … as `written`).
func writerCounters(_ log: String) -> [String: Int64] {
    guard let line = log.split(separator: "\n").last(where: { $0.contains(" info writer ") }) else { return [:] }
    var out: [String: Int64] = [:]
    for part in line.split(separator: " ") {
        let kv = part.split(separator: "=", maxSplits: 1)
        guard kv.count == 2, kv[0].hasPrefix("writer."), let v = Int64(kv[1]) else { continue }
        out[String(kv[0].dropFirst("writer.".count))] = v
    }
    return out
}

/// `timestamp` of every entry of a stream, in stream order.
func streamTimestamps(_ server: RedisServer, _ key: String) throws -> [Int64] {
    let lines = try server.cli(["--raw", "XRANGE", key, "-", "+"]).split(separator: "\n").map(String.init)
    var out: [Int64] = []
    for (i, l) in lines.enumerated() where l == "timestamp" && i + 1 < lines.count {
        if let v = Int64(lines[i + 1]) { out.append(v) }
    }
    return out
}

/// The outage tests' agent: mem every 200 ms, short timeouts, a breaker that opens at 2 failures;
/// `output` adds keys to `[outputs.redis]`.
func outageConfig(_ dir: URL, port: Int, output: String = "") -> String {
    """
    [agent]
    hostname = "h"
    interval = "200ms"
    flush_interval = "100ms"
    data_dir = "\(dir.path)/data"
    [outputs.redis]
    url = "redis://127.0.0.1:\(port)/0"
    connect_timeout = "200ms"
    timeout = "500ms"
    \(output)
    [breaker]
    failure_threshold = 2
    open_timeout = "200ms"
    max_open_timeout = "1s"
    [[inputs.mem]]
    """
}

/// Starts `spillway run` with `toml` as the config in `dir`, its log in `dir/agent.log`.
func launchAgent(_ toml: String, in dir: URL) throws -> (agent: Process, log: URL) {
    try toml.write(to: dir.appendingPathComponent("agent.toml"), atomically: true, encoding: .utf8)
    let log = dir.appendingPathComponent("agent.log")
    _ = FileManager.default.createFile(atPath: log.path, contents: nil)
    let agent = Process()
    agent.executableURL = URL(fileURLWithPath: spillwayBin)
    agent.arguments = ["run", "--config", dir.appendingPathComponent("agent.toml").path]
    agent.standardError = try FileHandle(forWritingTo: log)
    agent.standardOutput = FileHandle.nullDevice
    try agent.run()
    return (agent, log)
}

/// Stops the agent with SIGTERM (at most 15 s) and returns its log.
func stopAgent(_ agent: Process, log: URL) -> String {
    kill(agent.processIdentifier, SIGTERM)
    let deadline = Date().addingTimeInterval(15)
    while agent.isRunning, Date() < deadline { usleep(20_000) }
    #expect(!agent.isRunning, "the agent did not stop on SIGTERM")
    if agent.isRunning { kill(agent.processIdentifier, SIGKILL) }
    agent.waitUntilExit()
    let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
    #expect(agent.terminationStatus == 0, "\(text)")
    return text
}

@Suite(.serialized) struct Outages {
    /// Redis is SIGKILLed mid-stream and restarted on the same port a few seconds later: every record
    /// arrives exactly once, in order, and the counters add up.
    @Test func redisKilledAndRestarted() throws {
        let port = try RedisServer.freePort()
        let redisDir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-outage-\(UUID().uuidString)")
        let aof = ["--appendonly", "yes", "--appendfsync", "always"]
        var server = try RedisServer(port: port, dir: redisDir, args: aof)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-agent-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir); server.stop(); server.removeFiles() }
        let (agent, log) = try launchAgent(outageConfig(dir, port: port), in: dir)
        defer { if agent.isRunning { kill(agent.processIdentifier, SIGKILL) } }
        func length() -> Int { Int((try? server.cli(["XLEN", "metrics:h:mem"])) ?? "") ?? 0 }
        var deadline = Date().addingTimeInterval(15)
        while length() < 5, Date() < deadline { usleep(100_000) }
        #expect(length() >= 5)
        server.crash()
        usleep(3_000_000)  // 15 collections spill meanwhile
        server = try RedisServer(port: port, dir: redisDir, args: aof)
        let before = length()
        deadline = Date().addingTimeInterval(20)
        while length() < before + 20, Date() < deadline { usleep(100_000) }
        let text = stopAgent(agent, log: log)
        let c = writerCounters(text)
        let timestamps = try streamTimestamps(server, "metrics:h:mem")
        // Exactly once and in order: one entry per 200 ms collection, no gap, no repeat.
        #expect(timestamps.count + internalInRedis(server) == Int((c["written"] ?? -1) + (c["replayed"] ?? -1)), "\(c) vs \(timestamps.count)")
        let gaps = zip(timestamps, timestamps.dropFirst()).map { $1 - $0 }
        #expect(gaps.allSatisfy { $0 == 200 }, "\(gaps)")
        #expect((c["spilled"] ?? 0) > 0 && (c["replayed"] ?? 0) > 0, "\(c)")
        #expect(c["dropped"] == 0 && c["rejected"] == 0, "\(c)")
        // Each spilled record ended once: probes that failed while Redis was down did not count
        // their batches as spilled again.
        #expect((c["spilled"] ?? 0) <= (c["replayed"] ?? 0) + (c["duplicates"] ?? 0), "\(c)")
        #expect(text.contains("circuit breaker open") && text.contains("circuit breaker closed"), "\(text)")
    }

    /// Timeseries: Redis is SIGKILLed and comes back empty (no persistence), so every series the
    /// agent made is gone. The agent creates them again and delivers what it spilled in the outage
    /// and everything after: no sample rejected, none missing from the first one Redis has, and the
    /// series found by their labels again.
    @Test func redisBackWithoutItsDataTimeseries() throws {
        let port = try RedisServer.freePort()
        var server = try RedisServer(stack: true, port: port)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-agent-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir); server.stop(); server.removeFiles() }
        let (agent, log) = try launchAgent(outageConfig(dir, port: port, output: "format = \"timeseries\"\nrollups = [\"max:1m:1d\"]\n"), in: dir)
        defer { if agent.isRunning { kill(agent.processIdentifier, SIGKILL) } }
        let key = "ts:h:mem:total"
        func samples() -> [Int64] {
            ((try? server.cli(["TS.RANGE", key, "-", "+"])) ?? "").split(separator: "\n").enumerated()
                .compactMap { $0.offset % 2 == 0 ? Int64($0.element) : nil }
        }
        var deadline = Date().addingTimeInterval(20)
        while samples().count < 5, Date() < deadline { usleep(100_000) }
        #expect(samples().count >= 5)
        server.crash()
        let crashedAt = Int64(Date().timeIntervalSince1970 * 1000)
        usleep(2_000_000)  // collections spill meanwhile
        server = try RedisServer(stack: true, port: port)
        #expect(samples().isEmpty)
        deadline = Date().addingTimeInterval(30)
        while samples().count < 25, Date() < deadline { usleep(100_000) }
        let text = stopAgent(agent, log: log)
        let c = writerCounters(text)
        let got = samples()
        // What was collected from the crash on (spilled in the outage) is there, and nothing is
        // missing after it. (What Redis had acknowledged before the crash went with its data.)
        #expect(got.count >= 25, "\(got.count) samples")
        #expect((got.first ?? .max) <= crashedAt + 200, "first sample \(got.first ?? 0), crash at \(crashedAt)")
        #expect((c["replayed"] ?? 0) > 0, "\(c)")
        let gaps = zip(got, got.dropFirst()).map { $1 - $0 }
        #expect(gaps.allSatisfy { $0 == 200 }, "\(gaps)")
        #expect(c["dropped"] == 0 && c["rejected"] == 0 && (c["spilled"] ?? 0) > 0, "\(c)")
        #expect(text.contains("gone from Redis"), "\(text)")
        // Created again with the rollup's rule; labels set again by the next records.
        #expect(try server.cli(["TS.INFO", key]).contains("\(key):max_1m"))
        #expect(try server.cli(["TS.MRANGE", "-", "+", "FILTER", "name=mem", "field=total", "host=h"]).contains(key))
    }
}

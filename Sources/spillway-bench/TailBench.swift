import Foundation
import Logging
import ServiceLifecycle
import SpillwayAgent
import SpillwayConfig
import SpillwayCore
import SpillwayInputs
import SpillwayTestSupport

/// A log line of about 120 bytes, as an application writes them.
func benchLogLine(_ i: Int) -> String {
    let s = String(format: "2026-11-22T01:%02d:%02d.%03dZ INFO [worker-%d] GET /api/v1/items/%07d status=200 dur_ms=%d.%d bytes=%05d",
                   (i / 60_000) % 60, (i / 1000) % 60, i % 1000, i % 8, i, i % 97, i % 10, i % 65536)
    return s + String(repeating: " ", count: max(0, 119 - s.utf8.count)) + "."
}

/// Follows `files` files holding `lines` lines in all (written before the agent starts, read from
/// their beginning) through the agent's own path: tail → queue → encode → write-ahead buffer → send.
/// Returns lines/s until Redis acknowledged the last one, CPU per line, and RSS samples.
/// Writes `lines` lines spread over `files` files into a new directory (read by every round).
func writeBenchLogs(lines: Int, files: Int) throws -> URL {
    let logs = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-tail-bench-logs-\(getpid())-\(files)")
    try? FileManager.default.removeItem(at: logs)
    try FileManager.default.createDirectory(at: logs, withIntermediateDirectories: true)
    let perFile = lines / files
    for f in 0..<files {
        var text = ""
        text.reserveCapacity(perFile * 121)
        for i in 0..<perFile { text += benchLogLine(f * perFile + i) + "\n" }
        try text.write(to: logs.appendingPathComponent("app-\(f).log"), atomically: false, encoding: .utf8)
    }
    return logs
}

func tailThroughAgent(server: RedisServer, logs: URL, lines: Int, url: String? = nil, redisExtra: String = "") throws -> (rate: Double, cpuPerLine: Double, rss: [Double]) {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-tail-bench-\(getpid())")
    try? FileManager.default.removeItem(at: dir)
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let configPath = dir.appendingPathComponent("agent.toml").path
    try """
        [agent]
        hostname = "bench-host"
        data_dir = "\(dir.appendingPathComponent("data").path)"
        [outputs.redis]
        url = "\(url ?? server.url)"
        \(redisExtra)
        [[inputs.tail]]
        files = ["\(logs.path)/*.log"]
        from_beginning = true
        """.write(toFile: configPath, atomically: true, encoding: .utf8)
    try FileManager.default.createDirectory(at: dir.appendingPathComponent("none"), withIntermediateDirectories: true)
    let config = try ConfigLoader(registry: InputRegistry.all).load(configPath: configPath, configDir: dir.appendingPathComponent("none").path)
    let logger = Logger(label: "bench")
    let dataDir = dir.appendingPathComponent("data").path
    try prepareDataDirectory(dataDir)
    let (routes, instanceRoute) = makeRoutes(config)
    let queue = RecordQueue(limit: config.agent.bufferLimit, batchSize: config.agent.batchSize)
    let stats = WriterStats()
    let spool = openSpillBuffer(config: config, directory: dataDir, logger: logger)
    let writer = WriterService(config: config, queue: queue, routes: routes, dataDirectory: dataDir, stats: stats, spool: spool, logger: logger)
    let tail = TailService(config: config, queue: queue, instanceRoute: instanceRoute, spool: spool, logger: logger)
    let group = ServiceGroup(configuration: .init(services: [.init(service: writer), .init(service: tail)], logger: logger))
    // The agent's CPU: the process's, less this (monitoring) thread's.
    let cpu0 = processCPUTimeNanoseconds() - threadCPU()
    let start = monotonicNanoseconds()
    let done = DispatchSemaphore(value: 0)
    Task.detached {
        do { try await group.run() } catch { print("agent failed: \(error)") }
        done.signal()
    }
    var rss: [Double] = []
    var nextSample = lines / 10
    let deadline = start + 600_000_000_000
    while true {
        let s = stats.snapshot
        let n = Int(s.counters.written + s.replayed + s.counters.duplicates)
        if n >= nextSample { rss.append(rssMiB()); nextSample += lines / 10 }
        if n >= lines || monotonicNanoseconds() > deadline { break }
        usleep(5_000)
    }
    let seconds = Double(monotonicNanoseconds() - start) / 1e9
    let cpu = Double(processCPUTimeNanoseconds() - threadCPU() - cpu0)
    Task.detached { await group.triggerGracefulShutdown() }
    done.wait()
    let s = stats.snapshot
    let written = s.counters.written + s.replayed
    guard written == Int64(lines), s.counters.duplicates == 0 else { throw InputError("wrote \(written) of \(lines): \(s)") }
    return (Double(lines) / seconds, cpu / Double(lines), rss)
}

/// The calling thread's CPU time, ns.
func threadCPU() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}

/// The CPU time redis-server has used so far (user + system), seconds.
func redisCPUSeconds(_ server: RedisServer) throws -> Double {
    let info = try server.cli(["INFO", "cpu"])
    var total = 0.0
    for line in info.split(whereSeparator: \.isNewline) where line.hasPrefix("used_cpu_sys:") || line.hasPrefix("used_cpu_user:") {
        total += Double(line.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) ?? 0
    }
    return total
}

/// The median of `values` (the lower middle for an even count).
func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.isEmpty ? 0 : sorted[(sorted.count - 1) / 2]
}

/// `rounds` rounds; in each, the agent's runs and the references are measured back to back, so a
/// change in the machine's speed between rounds (this is a shared VM) moves both. Within a round the
/// speed drifts too (by a third within seconds, seen here), so each run of ours sits between two runs
/// of redis-benchmark -c 50 and its ratio is to their mean: -c 50, 1 file, -c 50, -c 1, 100 files,
/// -c 50. The summary gives the medians.
func tailBenchmarks(lines: Int, rounds: Int) throws {
    let server = try RedisServer()
    defer { server.stop(); server.removeFiles() }
    let oneFile = try writeBenchLogs(lines: lines, files: 1)
    let hundredFiles = try writeBenchLogs(lines: lines, files: 100)
    defer {
        try? FileManager.default.removeItem(at: oneFile)
        try? FileManager.default.removeItem(at: hundredFiles)
    }
    // The same XADD as the agent sends for a line: message of 120 bytes, tags host and path, timestamp.
    let xadd = ["XADD", "metrics:bench-host:log", "MAXLEN", "~", "100000", "*", "message", benchLogLine(12345),
                "tag_host", "bench-host", "tag_path", "/tmp/spillway-tail-bench/logs/app-0.log", "timestamp", "1700000000123"]
    print("tail: \(lines) lines of 120 bytes, end to end (file → queue → encode → write-ahead buffer → Redis stream), MAXLEN ~ 100000;")
    print("  \(rounds) rounds, each: redis-benchmark XADD -P 64 -c 50, 1 file, -c 50, -c 1, 100 files, -c 50 (each of our runs")
    print("  against the mean of the -c 50 runs around it, and against -c 1)")
    var r1: [Double] = [], r100: [Double] = [], r1c1: [Double] = [], r100c1: [Double] = [], cpu1: [Double] = [], cpu100: [Double] = []
    var rssAll: [Double] = []
    /// redis-benchmark with `clients`, on an empty server, and the Redis CPU it took.
    func reference(clients: Int) throws -> (rate: Double, redisCPU: Double) {
        try server.cli(["FLUSHALL"])
        let before = try redisCPUSeconds(server)
        let rate = try redisBenchmark(port: server.port, requests: lines, clients: clients, command: xadd)
        return (rate, try redisCPUSeconds(server) - before)
    }
    /// The agent on `logs`, on an empty server, and the Redis CPU it took.
    func ours(_ logs: URL) throws -> (run: (rate: Double, cpuPerLine: Double, rss: [Double]), redisCPU: Double) {
        try server.cli(["FLUSHALL"])
        let before = try redisCPUSeconds(server)
        let run = try tailThroughAgent(server: server, logs: logs, lines: lines)
        return (run, try redisCPUSeconds(server) - before)
    }
    for round in 1...rounds {
        let refA = try reference(clients: 50)
        let (one, oneRedis) = try ours(oneFile)
        let refB = try reference(clients: 50)
        let ref1 = try reference(clients: 1)
        let (hundred, hundredRedis) = try ours(hundredFiles)
        let refC = try reference(clients: 50)
        try server.cli(["FLUSHALL"])
        let ref50One = (refA.rate + refB.rate) / 2, ref50Hundred = (refB.rate + refC.rate) / 2
        print(String(format: "  round %d: Redis CPU per XADD: %.2f µs for the agent's 1 file (busy %.0f%%), %.2f for its 100 files (busy %.0f%%), %.2f for redis-benchmark -c 50's (busy %.0f%%)",
                     round, oneRedis * 1e6 / Double(lines), oneRedis * one.rate / Double(lines) * 100,
                     hundredRedis * 1e6 / Double(lines), hundredRedis * hundred.rate / Double(lines) * 100,
                     refB.redisCPU * 1e6 / Double(lines), refB.redisCPU * refB.rate / Double(lines) * 100))
        r1.append(one.rate / ref50One); r100.append(hundred.rate / ref50Hundred)
        r1c1.append(one.rate / ref1.rate); r100c1.append(hundred.rate / ref1.rate)
        cpu1.append(one.cpuPerLine / 1000); cpu100.append(hundred.cpuPerLine / 1000)
        rssAll += one.rss + hundred.rss
        print(String(format: "  round %d: -c 50 %7.0f, 1 file %7.0f lines/s (%.2f µs CPU/line), -c 50 %7.0f, -c 1 %7.0f, 100 files %7.0f (%.2f µs), -c 50 %7.0f; ratios to -c 50: %.2f, %.2f; to -c 1: %.2f, %.2f",
                     round, refA.rate, one.rate, one.cpuPerLine / 1000, refB.rate, ref1.rate, hundred.rate, hundred.cpuPerLine / 1000, refC.rate,
                     one.rate / ref50One, hundred.rate / ref50Hundred, one.rate / ref1.rate, hundred.rate / ref1.rate))
        print("    RSS MiB at each tenth, 1 file: " + one.rss.map { String(format: "%.1f", $0) }.joined(separator: " ")
              + "; 100 files: " + hundred.rss.map { String(format: "%.1f", $0) }.joined(separator: " "))
    }
    print(String(format: "  median ratio to redis-benchmark -c 50: 1 file %.2f, 100 files %.2f   (target >= 0.8)", median(r1), median(r100)))
    print(String(format: "  median ratio to redis-benchmark -c 1:  1 file %.2f, 100 files %.2f", median(r1c1), median(r100c1)))
    print(String(format: "  median CPU per line: 1 file %.2f µs, 100 files %.2f µs; RSS %.1f to %.1f MiB", median(cpu1), median(cpu100),
                 rssAll.min() ?? 0, rssAll.max() ?? 0))
    try tailOverTLS(logs: oneFile, lines: lines, rounds: rounds, xadd: xadd)
}

/// The same, 1 file, over TLS (a redis-server with a TLS port, certificates made by openssl), between
/// two runs of redis-benchmark --tls with the same XADD (the ratio is to their mean).
func tailOverTLS(logs: URL, lines: Int, rounds: Int, xadd: [String]) throws {
    let certs = try TestCertificates()
    defer { certs.remove() }
    let tlsPort = try RedisServer.freePort()
    let server = try RedisServer(args: certs.serverArgs(tlsPort: tlsPort))
    defer { server.stop(); server.removeFiles() }
    let tlsArgs = ["--tls", "--cacert", certs.ca]
    print("tail over TLS: \(lines) lines, 1 file, rediss:// (TLS 1.3), against redis-benchmark --tls -P 64 -c 50 on the same server")
    var ratios: [Double] = [], cpu: [Double] = [], rssAll: [Double] = []
    for round in 1...rounds {
        let before = try redisBenchmark(port: tlsPort, requests: lines, clients: 50, command: xadd, extra: tlsArgs)
        try server.cli(["FLUSHALL"])
        let ours = try tailThroughAgent(server: server, logs: logs, lines: lines, url: "rediss://127.0.0.1:\(tlsPort)/0",
                                        redisExtra: "tls_ca_file = \"\(certs.ca)\"")
        try server.cli(["FLUSHALL"])
        let after = try redisBenchmark(port: tlsPort, requests: lines, clients: 50, command: xadd, extra: tlsArgs)
        try server.cli(["FLUSHALL"])
        let ref = (before + after) / 2
        ratios.append(ours.rate / ref)
        cpu.append(ours.cpuPerLine / 1000)
        rssAll += ours.rss
        print(String(format: "  round %d: redis-benchmark --tls -c 50 %7.0f, ours %7.0f lines/s (%.2f µs CPU/line), redis-benchmark %7.0f; ratio %.2f",
                     round, before, ours.rate, ours.cpuPerLine / 1000, after, ours.rate / ref))
    }
    print(String(format: "  median ratio over TLS: %.2f; CPU per line %.2f µs; RSS %.1f to %.1f MiB", median(ratios), median(cpu),
                 rssAll.min() ?? 0, rssAll.max() ?? 0))
}

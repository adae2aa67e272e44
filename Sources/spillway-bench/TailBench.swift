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
func tailThroughAgent(server: RedisServer, lines: Int, files: Int) throws -> (rate: Double, cpuPerLine: Double, rss: [Double]) {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-tail-bench-\(getpid())-\(files)")
    try? FileManager.default.removeItem(at: dir)
    let logs = dir.appendingPathComponent("logs")
    try FileManager.default.createDirectory(at: logs, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let perFile = lines / files
    for f in 0..<files {
        var text = ""
        text.reserveCapacity(perFile * 121)
        for i in 0..<perFile { text += benchLogLine(f * perFile + i) + "\n" }
        try text.write(to: logs.appendingPathComponent("app-\(f).log"), atomically: false, encoding: .utf8)
    }
    let configPath = dir.appendingPathComponent("agent.toml").path
    try """
        [agent]
        hostname = "bench-host"
        data_dir = "\(dir.appendingPathComponent("data").path)"
        [outputs.redis]
        url = "\(server.url)"
        [[inputs.tail]]
        files = ["\(logs.path)/*.log"]
        from_beginning = true
        """.write(toFile: configPath, atomically: true, encoding: .utf8)
    try FileManager.default.createDirectory(at: logs.appendingPathComponent("none"), withIntermediateDirectories: true)
    let config = try ConfigLoader(registry: InputRegistry.all).load(configPath: configPath, configDir: logs.appendingPathComponent("none").path)
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
    func threadCPU() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }
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

func tailBenchmarks(lines: Int) throws {
    let server = try RedisServer()
    defer { server.stop(); server.removeFiles() }
    let one = try tailThroughAgent(server: server, lines: lines, files: 1)
    let len1 = try server.cli(["XLEN", "metrics:bench-host:log"])
    try server.cli(["FLUSHALL"])
    let hundred = try tailThroughAgent(server: server, lines: lines, files: 100)
    try server.cli(["FLUSHALL"])
    // The same XADD as the agent sends for a line: message of 120 bytes, tags host and path, timestamp.
    let xadd = ["XADD", "metrics:bench-host:log", "MAXLEN", "~", "100000", "*", "message", benchLogLine(12345),
                "tag_host", "bench-host", "tag_path", "/tmp/spillway-tail-bench/logs/app-0.log", "timestamp", "1700000000123"]
    let ref1 = try redisBenchmark(port: server.port, requests: lines, clients: 1, command: xadd)
    try server.cli(["FLUSHALL"])
    let ref50 = try redisBenchmark(port: server.port, requests: lines, clients: 50, command: xadd)
    print("tail: \(lines) lines of 120 bytes, end to end (file → queue → encode → write-ahead buffer → Redis stream); stream length \(len1) (MAXLEN ~ 100000)")
    print(String(format: "  1 file      %10.0f lines/s   %.2f µs CPU per line   ratio %.2f to -c 1, %.2f to -c 50   (target >= 0.6)",
                 one.rate, one.cpuPerLine / 1000, one.rate / ref1, one.rate / ref50))
    print(String(format: "  100 files   %10.0f lines/s   %.2f µs CPU per line   ratio %.2f to -c 1, %.2f to -c 50",
                 hundred.rate, hundred.cpuPerLine / 1000, hundred.rate / ref1, hundred.rate / ref50))
    print(String(format: "  redis-benchmark XADD -P 64 -c 1    %10.0f requests/s", ref1))
    print(String(format: "  redis-benchmark XADD -P 64 -c 50   %10.0f requests/s", ref50))
    print("  RSS MiB at each tenth, 1 file: " + one.rss.map { String(format: "%.1f", $0) }.joined(separator: " "))
    print("  RSS MiB at each tenth, 100 files: " + hundred.rss.map { String(format: "%.1f", $0) }.joined(separator: " "))
}

import Foundation
import Logging
import RedisSink
import SpillwayAgent
import SpillwayConfig
import SpillwayCore
import SpillwayTestSupport

/// Resident set size of this process, in MiB.
func rssMiB() -> Double {
    guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let pages = Double(text.split(separator: " ")[1]) ?? 0
    return pages * Double(sysconf(Int32(_SC_PAGESIZE))) / 1_048_576
}

let benchFields = ["usage_user", "usage_system", "usage_idle", "usage_nice", "usage_iowait", "usage_irq",
                   "usage_softirq", "usage_steal", "usage_guest", "usage_guest_nice", "usage_active"]

/// A cpu record as the cpu input makes it: 11 float fields, tags cpu, dc, host.
func benchRecord(_ i: Int, ms: Int64) -> Record {
    Record(name: "cpu", tags: [Tag("cpu", "cpu\(i % 64)"), Tag("dc", "eu-1"), Tag("host", "bench-host")],
           fields: benchFields.enumerated().map { Field($1, .double(Double((i + $0) % 1000) / 8)) },
           timestamp: ms * 1_000_000)
}

/// Runs redis-benchmark against `port` and returns its requests per second.
/// With `randomRange`, each `__rand_int__` in the command becomes a random number below it (`-r`).
func redisBenchmark(port: Int, requests: Int, clients: Int, command: [String], randomRange: Int? = nil, extra: [String] = []) throws -> Double {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/redis-benchmark")
    p.arguments = ["-h", "127.0.0.1", "-p", String(port), "-n", String(requests), "-P", "64", "-c", String(clients), "--csv"]
        + (randomRange.map { ["-r", String($0)] } ?? []) + extra + command
    let out = Pipe()
    p.standardOutput = out
    p.standardError = FileHandle.nullDevice
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    // --csv: a header line, then "test","rps",...
    for line in String(decoding: data, as: UTF8.self).split(separator: "\n").dropFirst() {
        let cols = line.split(separator: ",").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
        if cols.count > 1, let rps = Double(cols[1]) { return rps }
    }
    throw InputError("redis-benchmark printed no rate: \(String(decoding: data, as: UTF8.self))")
}

/// CPU time (user + system) of this process's threads, by thread name, ns (`/proc/self/task`).
func threadCPUByName() -> [String: Int64] {
    var out: [String: Int64] = [:]
    let tick = 1_000_000_000 / Int64(sysconf(Int32(_SC_CLK_TCK)))
    for tid in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? [] {
        guard let text = try? String(contentsOfFile: "/proc/self/task/\(tid)/stat", encoding: .utf8),
              let open = text.firstIndex(of: "("), let close = text.lastIndex(of: ")") else { continue }
        // After the name: state, then 10 fields, then utime and stime (fields 14 and 15 of stat).
        let rest = text[text.index(after: close)...].split(separator: " ")
        guard rest.count > 12, let user = Int64(rest[11]), let system = Int64(rest[12]) else { continue }
        out[String(text[text.index(after: open)..<close]), default: 0] += (user + system) * tick
    }
    return out
}

/// The machine's idle and total CPU time so far (`/proc/stat`), in ticks.
func machineCPUTicks() -> (idle: Int, total: Int) {
    let text = (try? String(contentsOfFile: "/proc/stat", encoding: .utf8)) ?? ""
    let cols = (text.split(separator: "\n").first ?? "").split(separator: " ").dropFirst().compactMap { Int($0) }
    guard cols.count > 4 else { return (0, 0) }
    return (cols[3] + cols[4], cols.reduce(0, +))
}

/// Where the CPU went while the writer ran: per record, its two stages' threads and the thread
/// pushing the records (the inputs' part), and how idle the machine was.
struct WriterCPU {
    var send = 0.0, encode = 0.0, push = 0.0, machineIdle = 0.0

    var text: String {
        String(format: "send stage %.2f µs, encode stage %.2f µs, pushing %.2f µs per record; machine idle %.0f%%",
               send / 1000, encode / 1000, push / 1000, machineIdle * 100)
    }
}

/// Writes `records` XADDs like the writer's (the bench records, explicit IDs one ms apart from
/// `firstMs`), in the Redis protocol, to a file for `redis-cli --pipe`.
func writePipeFile(_ path: String, records: Int, firstMs: Int64 = 1_700_000_000_001, maxlen: Int = 100_000) throws {
    guard let out = FileHandle(forWritingAtPath: path) ?? {
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        return FileHandle(forWritingAtPath: path)
    }() else { throw InputError("cannot write \(path)") }
    defer { try? out.close() }
    var chunk: [UInt8] = []
    func arg(_ s: String) {
        chunk.append(contentsOf: "$\(s.utf8.count)\r\n".utf8)
        chunk.append(contentsOf: s.utf8)
        chunk.append(contentsOf: "\r\n".utf8)
    }
    for i in 0..<records {
        let ms = firstMs + Int64(i)
        chunk.append(contentsOf: "*36\r\n".utf8)
        for a in ["XADD", "metrics:bench-host:cpu", "MAXLEN", "~", "\(maxlen)", "\(ms)-0"] { arg(a) }
        for (j, f) in benchFields.enumerated() { arg(f); arg(LineProtocol.formatDouble(Double((i + j) % 1000) / 8)) }
        for a in ["tag_cpu", "cpu\(i % 64)", "tag_dc", "eu-1", "tag_host", "bench-host", "timestamp", "\(ms)"] { arg(a) }
        if chunk.count > 1 << 20 {
            try out.write(contentsOf: chunk)
            chunk.removeAll(keepingCapacity: true)
        }
    }
    try out.write(contentsOf: chunk)
}

/// `redis-cli --pipe` sending the file at `path` (formatted beforehand, one connection, every reply
/// read): commands per second.
func redisCLIPipe(port: Int, path: String, commands: Int) throws -> Double {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/redis-cli")
    p.arguments = ["-h", "127.0.0.1", "-p", String(port), "--pipe"]
    p.standardInput = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
    let out = Pipe()
    p.standardOutput = out
    p.standardError = out
    let start = monotonicNanoseconds()
    try p.run()
    let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    p.waitUntilExit()
    let seconds = Double(monotonicNanoseconds() - start) / 1e9
    guard p.terminationStatus == 0, text.contains("errors: 0, replies: \(commands)") else { throw InputError("redis-cli --pipe: \(text)") }
    return Double(commands) / seconds
}

/// Pushes `total` records through the agent's own writer path (RecordQueue -> WriterService: encode
/// stage, send stage) as fast as the queue takes them. Returns records/s (until Redis acknowledged
/// the last one), the writer's CPU per record (the process's, less this pushing thread's), and the
/// RSS samples taken at each tenth.
func pushThroughWriter(_ redis: RedisOutputConfig, total: Int, batchSize: Int, bufferDirectory: String? = nil) throws -> (rate: Double, cpuPerRecord: Double, rss: [Double], split: WriterCPU) {
    var agent = AgentConfig(hostname: "bench-host")
    agent.batchSize = batchSize
    agent.flushInterval = 1_000_000_000
    let config = Config(agent: agent, inputs: [], redis: redis, files: [], warnings: [])
    let queue = RecordQueue(limit: 20 * batchSize, batchSize: batchSize)
    let stats = WriterStats()
    let writer = WriterService(config: config, queue: queue, routes: [Route(key: redis.key, maxlen: redis.maxlen)],
                               dataDirectory: bufferDirectory, stats: stats, logger: Logger(label: "bench"))
    let done = DispatchSemaphore(value: 0)
    Task.detached {
        do { try await writer.run() } catch { print("writer failed: \(error)") }
        done.signal()
    }
    // One batch of records, re-pushed with moving timestamps (building records is the inputs' work).
    var pool = (0..<batchSize).map { QueuedRecord(record: benchRecord($0, ms: 0), route: 0) }
    var ms: Int64 = 1_700_000_000_000
    var rss: [Double] = []
    let push0 = threadCPU(), threads0 = threadCPUByName(), machine0 = machineCPUTicks()
    let cpu0 = processCPUTimeNanoseconds() - push0
    let start = monotonicNanoseconds()
    var pushed = 0
    while pushed < total {
        while queue.count > 10 * batchSize { usleep(2_000) }
        let n = min(batchSize, total - pushed)
        for i in 0..<n {
            ms += 1
            pool[i].record.timestamp = ms * 1_000_000
        }
        queue.push(n == batchSize ? pool : Array(pool[0..<n]))
        pushed += n
        if pushed % max(batchSize, total / 10) < batchSize { rss.append(rssMiB()) }
    }
    let deadline = monotonicNanoseconds() + 120_000_000_000
    while stats.snapshot.counters.written + stats.snapshot.replayed < Int64(total), monotonicNanoseconds() < deadline { usleep(1_000) }
    let seconds = Double(monotonicNanoseconds() - start) / 1e9
    let push1 = threadCPU()
    let cpu = Double(processCPUTimeNanoseconds() - push1 - cpu0)
    let threads1 = threadCPUByName(), machine1 = machineCPUTicks()
    func stage(_ name: String) -> Double { Double((threads1[name] ?? 0) - (threads0[name] ?? 0)) / Double(total) }
    let split = WriterCPU(send: stage("spillway-send"), encode: stage("spillway-encode"), push: Double(push1 - push0) / Double(total),
                          machineIdle: Double(machine1.idle - machine0.idle) / Double(max(1, machine1.total - machine0.total)))
    queue.close()
    done.wait()
    let written = stats.snapshot.counters.written + stats.snapshot.replayed
    guard written == Int64(total) else { throw InputError("wrote \(written) of \(total): \(stats.snapshot)") }
    return (Double(total) / seconds, cpu / Double(total), rss, split)
}

func writerBenchmarks(records: Int, rounds: Int, streams: Bool = true, timeseries: Bool = true) throws {
    let batchSize = 1000
    // Streams, on Debian's redis-server.
    if streams {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        var config = RedisOutputConfig()
        config.endpoint = try RedisEndpoint.parse(server.url)
        let bufferDir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-wal-bench-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: bufferDir) }
        // The same XADD (11 fields, 3 tags, timestamp, MAXLEN ~ 100000), pipelined 64 deep.
        var xadd = ["XADD", "metrics:bench-host:cpu", "MAXLEN", "~", "100000", "*"]
        for (i, f) in benchFields.enumerated() { xadd += [f, String(Double((7 + i) % 1000) / 8)] }
        xadd += ["tag_cpu", "cpu7", "tag_dc", "eu-1", "tag_host", "bench-host", "timestamp", "1700000000123"]
        print("write (stream): \(records) cpu records (11 fields, 3 tags), batches of \(batchSize), one connection, redis-server \(try server.cli(["INFO", "server"]).split(whereSeparator: \.isNewline).first { $0.hasPrefix("redis_version") }?.split(separator: ":").last ?? "?")")
        print("  \(rounds) rounds, each: the writer, the writer + write-ahead buffer, redis-benchmark XADD -P 64 -c 50 and -c 1, redis-cli --pipe (ratios to the same round's references)")
        // The best one connection can do: the same XADDs as ours (explicit IDs), formatted beforehand.
        let pipeFile = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-pipe-bench-\(getpid()).resp").path
        try writePipeFile(pipeFile, records: records)
        defer { try? FileManager.default.removeItem(atPath: pipeFile) }
        var plain50: [Double] = [], ahead50: [Double] = [], plain1: [Double] = [], ahead1: [Double] = [], pipe: [Double] = [], rss: [Double] = [], rssAhead: [Double] = []
        for round in 1...rounds {
            let redis0 = try redisCPUSeconds(server)
            let ours = try pushThroughWriter(config, total: records, batchSize: batchSize)
            let redis1 = try redisCPUSeconds(server)
            try server.cli(["FLUSHALL"])
            try? FileManager.default.removeItem(atPath: bufferDir)
            try FileManager.default.createDirectory(atPath: bufferDir, withIntermediateDirectories: true)
            let ahead = try pushThroughWriter(config, total: records, batchSize: batchSize, bufferDirectory: bufferDir)
            try server.cli(["FLUSHALL"])
            let redis2 = try redisCPUSeconds(server)
            let ref50 = try redisBenchmark(port: server.port, requests: records, clients: 50, command: xadd)
            let redis3 = try redisCPUSeconds(server)
            try server.cli(["FLUSHALL"])
            let ref1 = try redisBenchmark(port: server.port, requests: records, clients: 1, command: xadd)
            try server.cli(["FLUSHALL"])
            let redis4 = try redisCPUSeconds(server)
            let refPipe = try redisCLIPipe(port: server.port, path: pipeFile, commands: records)
            let redis5 = try redisCPUSeconds(server)
            try server.cli(["FLUSHALL"])
            pipe.append(ours.rate / refPipe)
            plain50.append(ours.rate / ref50); ahead50.append(ahead.rate / ref50)
            plain1.append(ours.rate / ref1); ahead1.append(ahead.rate / ref1)
            rss += ours.rss; rssAhead += ahead.rss
            print(String(format: "  round %d: writer %7.0f records/s (%.2f µs CPU/record), + buffer %7.0f (%.2f µs); -c 50 %7.0f, -c 1 %7.0f; ratios to -c 50: %.2f, %.2f; to -c 1: %.2f, %.2f",
                         round, ours.rate, ours.cpuPerRecord / 1000, ahead.rate, ahead.cpuPerRecord / 1000, ref50, ref1,
                         ours.rate / ref50, ahead.rate / ref50, ours.rate / ref1, ahead.rate / ref1))
            print(String(format: "    redis-cli --pipe %7.0f, ratio %.2f", refPipe, ours.rate / refPipe))
            print("    writer: " + ours.split.text)
            print(String(format: "    Redis CPU per XADD: %.2f µs for the writer's (busy %.0f%%), %.2f µs for redis-benchmark -c 50's (busy %.0f%%), %.2f µs for redis-cli --pipe's (busy %.0f%%)",
                         (redis1 - redis0) * 1e6 / Double(records), (redis1 - redis0) * ours.rate / Double(records) * 100,
                         (redis3 - redis2) * 1e6 / Double(records), (redis3 - redis2) * ref50 / Double(records) * 100,
                         (redis5 - redis4) * 1e6 / Double(records), (redis5 - redis4) * refPipe / Double(records) * 100))
        }
        print(String(format: "  median ratio to redis-benchmark -c 50: writer %.2f, with the buffer %.2f   (target >= 0.8)", median(plain50), median(ahead50)))
        print(String(format: "  median ratio to redis-benchmark -c 1:  writer %.2f, with the buffer %.2f", median(plain1), median(ahead1)))
        print(String(format: "  median ratio to redis-cli --pipe (one connection, formatted beforehand): writer %.2f", median(pipe)))
        print(String(format: "  RSS %.1f to %.1f MiB; with the buffer %.1f to %.1f MiB", rss.min() ?? 0, rss.max() ?? 0, rssAhead.min() ?? 0, rssAhead.max() ?? 0))
    }
    // TimeSeries, on redis-stack's redis-server with RedisTimeSeries.
    if timeseries {
        let server = try RedisServer(stack: true)
        defer { server.stop(); server.removeFiles() }
        var config = RedisOutputConfig()
        config.endpoint = try RedisEndpoint.parse(server.url)
        config.format = .timeseries
        config.key = try KeyTemplate(RedisOutputConfig.defaultSeriesKey, allowField: true)
        let tsRecords = records / 5
        // The same TS.MADD as ours: 11 samples, each to one of 704 series (64 cpus × 11 fields) named as
        // ours are (redis-benchmark's -r 64 puts a random cpu number, 12 digits, in each key), values
        // of the same form. Only the timestamps differ: redis-benchmark cannot count, so `*`.
        var madd = ["TS.MADD"]
        for f in benchFields { madd += ["ts:bench-host:cpu:\(f):cpu=cpu__rand_int__:dc=eu-1", "*", "124.875"] }
        // The earlier reference, shown for comparison: 11 series of short names, value 1.25. Lighter
        // for Redis (one hot series per field).
        var light = ["TS.MADD"]
        for f in benchFields { light += ["bench:\(f)", "*", "1.25"] }
        func createReferenceSeries() throws {
            var commands = ""
            for f in benchFields {
                commands += "TS.CREATE bench:\(f) DUPLICATE_POLICY LAST\n"
                for cpu in 0..<64 {
                    commands += "TS.CREATE ts:bench-host:cpu:\(f):cpu=cpu\(String(repeating: "0", count: 12 - String(cpu).count))\(cpu):dc=eu-1 DUPLICATE_POLICY LAST LABELS name cpu field \(f) host bench-host cpu cpu\(cpu) dc eu-1\n"
                }
            }
            try server.cli(script: commands)
        }
        print("write (timeseries): \(tsRecords) cpu records = \(tsRecords * 11) samples, 704 series, TS.MADD; \(rounds) rounds, each: redis-benchmark -P 64 -c 50 with the same TS.MADD (704 series, -r 64), the writer, the same -c 50 again (the writer's ratio is to the mean of the two: the machine's speed drifts within a round), -c 1, and the lighter one (11 series) at -c 50")
        var ratios50: [Double] = [], ratios1: [Double] = [], ratiosLight: [Double] = [], rss: [Double] = []
        for round in 1...rounds {
            try server.cli(["FLUSHALL"])
            try createReferenceSeries()
            let before = try redisBenchmark(port: server.port, requests: tsRecords, clients: 50, command: madd, randomRange: 64)
            try server.cli(["FLUSHALL"])
            let redis0 = try redisCPUSeconds(server)
            let ours = try pushThroughWriter(config, total: tsRecords, batchSize: batchSize)
            let redis1 = try redisCPUSeconds(server)
            try server.cli(["FLUSHALL"])
            try createReferenceSeries()
            let redis2 = try redisCPUSeconds(server)
            let after = try redisBenchmark(port: server.port, requests: tsRecords, clients: 50, command: madd, randomRange: 64)
            let redis3 = try redisCPUSeconds(server)
            let ref1 = try redisBenchmark(port: server.port, requests: tsRecords, clients: 1, command: madd, randomRange: 64)
            let refLight = try redisBenchmark(port: server.port, requests: tsRecords, clients: 50, command: light)
            try server.cli(["FLUSHALL"])
            let ref50 = (before + after) / 2
            ratios50.append(ours.rate / ref50); ratios1.append(ours.rate / ref1); ratiosLight.append(ours.rate / refLight); rss += ours.rss
            print(String(format: "  round %d: -c 50 %7.0f, writer %7.0f records/s (%.0f samples/s, %.2f µs CPU/record), -c 50 %7.0f, -c 1 %7.0f, lighter -c 50 %7.0f; ratios %.2f, %.2f, %.2f",
                         round, before, ours.rate, ours.rate * 11, ours.cpuPerRecord / 1000, after, ref1, refLight, ours.rate / ref50, ours.rate / ref1, ours.rate / refLight))
            print(String(format: "    Redis CPU per TS.MADD: %.2f µs for the writer's (busy %.0f%%), %.2f µs for redis-benchmark -c 50's after it (busy %.0f%%)",
                         (redis1 - redis0) * 1e6 / Double(tsRecords), (redis1 - redis0) * ours.rate / Double(tsRecords) * 100,
                         (redis3 - redis2) * 1e6 / Double(tsRecords), (redis3 - redis2) * after / Double(tsRecords) * 100))
            print("    writer: " + ours.split.text)
        }
        print(String(format: "  median ratio to redis-benchmark -c 50: %.2f   (target >= 0.9); to -c 1: %.2f; to the lighter -c 50: %.2f",
                     median(ratios50), median(ratios1), median(ratiosLight)))
        print(String(format: "  RSS %.1f to %.1f MiB", rss.min() ?? 0, rss.max() ?? 0))
    }
}

import Foundation
import Logging
import RedisSink
import SpillwayBatch
import SpillwayConfig
import SpillwayCore
import SpillwayTestSupport
import Spool

/// Peak RSS of this process so far (VmHWM), in MiB.
func peakRSSMiB() -> Double {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
          let kb = Double(line.split(separator: " ", omittingEmptySubsequences: true)[1]) else { return 0 }
    return kb / 1024
}

/// Resets the peak RSS counter (VmHWM) so a phase measures its own peak.
func resetPeakRSS() {
    try? "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8)
}

func spoolBenchmarks(backlog: Int) throws {
    let batchSize = 1000
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-spool-bench-\(getpid())").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let server = try RedisServer()
    defer { server.stop(); server.removeFiles() }
    var config = RedisOutputConfig()
    config.endpoint = try RedisEndpoint.parse(server.url)
    var options = RedisConnectionOptions(endpoint: config.endpoint)
    options.timeout = 30_000_000_000
    let writer = RedisWriter(connection: RedisConnection(options: options),
                             encoder: BatchEncoder(config: config, routes: [Route(key: config.key, maxlen: config.maxlen)], minter: try StreamIDMinter(path: nil)),
                             logger: Logger(label: "bench"))
    var ms: Int64 = 1_700_000_000_000
    func nextBatch() throws -> EncodedBatch {
        var records: [QueuedRecord] = []
        records.reserveCapacity(batchSize)
        for i in 0..<batchSize {
            ms += 1
            records.append(QueuedRecord(record: benchRecord(i, ms: ms), route: 0))
        }
        return try writer.encode(records, now: ms * 1_000_000)
    }

    // The reference: the agent's direct-write rate (queue -> encode -> send, no backlog) on the same
    // server in the same run, measured before the spill and again after the replay; the ratio is to
    // their mean, so the machine's drift over the replay's minute weighs less.
    let directRecords = max(100_000, backlog / 10)
    let directBefore = try pushThroughWriter(config, total: directRecords, batchSize: batchSize).rate
    try server.cli(["FLUSHALL"])

    // Spill: appends while Redis is down (encoding is the writer's, outside the measured time).
    var spoolOptions = SpoolOptions()
    spoolOptions.maxBytes = 64 << 30
    let spool = try Spool(directory: dir, options: spoolOptions)
    var spillNs: Int64 = 0
    let batches = backlog / batchSize
    for _ in 0..<batches {
        let b = try nextBatch()
        let t = monotonicNanoseconds()
        let outcome = try spool.append(b, now: wallClockNanoseconds())
        spillNs += monotonicNanoseconds() - t
        guard outcome.stored else { throw InputError("spill refused a batch") }
    }
    let spillRate = Double(batches * batchSize) / (Double(spillNs) / 1e9)
    let fileMiB = Double((try? FileManager.default.attributesOfItem(atPath: spool.path)[.size] as? Int) ?? 0) / 1_048_576

    // Replay: oldest first, as the agent's send stage does: two batches on the connection (the next
    // is written while Redis works on the one before), each row deleted once Redis acknowledged all
    // of it, the deletes made while the next batch is on the wire.
    resetPeakRSS()
    let rssBefore = rssMiB()
    let start = monotonicNanoseconds()
    var replayed: Int64 = 0
    var inFlight: [(id: Int64, pending: PendingBatch, attempt: RedisWriter.Attempt)] = []
    func finishOldest() throws {
        var f = inFlight.removeFirst()
        let (c, e) = writer.finish(&f.pending, f.attempt)
        guard e == nil, f.pending.isComplete else { throw InputError("replay failed: \(e ?? "a batch left unsettled")") }
        spool.acknowledgeLater(id: f.id)
        replayed += c.written
    }
    while true {
        let (chunk, _) = try spool.oldestBatches(limit: 1, after: inFlight.last?.id ?? 0)
        guard let (id, b) = chunk.first else { break }
        if inFlight.count >= 2 { try finishOldest() }
        let p = PendingBatch(b)
        inFlight.append((id, p, writer.begin(p)))
        if spool.hasAcknowledgements { try spool.flushAcknowledgements() }
    }
    while !inFlight.isEmpty { try finishOldest() }
    try spool.flushAcknowledgements()
    guard spool.isEmpty, replayed == Int64(batches * batchSize) else { throw InputError("replayed \(replayed) of \(batches * batchSize)") }
    let replayRate = Double(replayed) / (Double(monotonicNanoseconds() - start) / 1e9)
    let peakRSS = peakRSSMiB()
    try server.cli(["FLUSHALL"])
    let directAfter = try pushThroughWriter(config, total: directRecords, batchSize: batchSize).rate
    let directRate = (directBefore + directAfter) / 2
    print("spill and replay: \(batches * batchSize) cpu records (11 fields, 3 tags) in batches of \(batchSize), buffer file \(String(format: "%.0f", fileMiB)) MiB")
    print(String(format: "  spill into SQLite (Redis down)  %10.0f records/s   (target >= 300000)", spillRate))
    print(String(format: "  replay from SQLite into Redis   %10.0f records/s", replayRate))
    print(String(format: "  direct write (the agent's path) %10.0f records/s before, %.0f after   replay/direct %.2f (to their mean; target >= 0.7)",
                 directBefore, directAfter, replayRate / directRate))
    print(String(format: "  RSS while replaying: %.1f MiB before, peak %.1f MiB   (target < 64 MiB)", rssBefore, peakRSS))
}

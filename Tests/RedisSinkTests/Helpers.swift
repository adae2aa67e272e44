import Foundation
import Logging
import RedisSink
import SpillwayBatch
import SpillwayConfig
import SpillwayCore
import SpillwayTestSupport
import Testing

let cpuFields = ["usage_user", "usage_system", "usage_idle", "usage_nice", "usage_iowait", "usage_irq",
                 "usage_softirq", "usage_steal", "usage_guest", "usage_guest_nice", "usage_active"]

/// A cpu record of the realistic shape: 11 fields, 3 tags.
func cpuRecord(host: String = "web-1", cpu: String = "cpu0", ms: Int64, base: Double = 1) -> Record {
    Record(
        name: "cpu",
        tags: [Tag("host", host), Tag("cpu", cpu), Tag("dc", "eu-1")],
        fields: cpuFields.enumerated().map { Field($1, .double(base + Double($0) / 4)) },
        timestamp: ms * 1_000_000 + 123_456
    )
}

func tempDir() -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-test-\(UUID().uuidString)").path
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

func outputConfig(_ url: String, _ mutate: (inout RedisOutputConfig) -> Void = { _ in }) throws -> RedisOutputConfig {
    var c = RedisOutputConfig()
    c.endpoint = try RedisEndpoint.parse(url)
    mutate(&c)
    return c
}

func makeWriter(_ config: RedisOutputConfig, statePath: String? = nil, timeout: Int64 = 5_000_000_000) throws -> RedisWriter {
    var options = RedisConnectionOptions(endpoint: config.endpoint)
    options.timeout = timeout
    options.connectTimeout = 1_000_000_000
    let encoder = BatchEncoder(config: config, routes: [Route(key: config.key, maxlen: config.maxlen)],
                               minter: try StreamIDMinter(path: statePath))
    return RedisWriter(connection: RedisConnection(options: options), encoder: encoder, logger: Logger(label: "test"))
}

/// Encodes and sends until the batch is settled (at most `tries` attempts).
@discardableResult
func deliver(_ writer: RedisWriter, _ records: [Record], tries: Int = 5) throws -> WriteCounters {
    let batch = try writer.encode(records.map { QueuedRecord(record: $0, route: 0) }, now: wallClockNanoseconds())
    return send(writer, batch, tries: tries).counters
}

func send(_ writer: RedisWriter, _ batch: EncodedBatch, tries: Int = 5) -> (counters: WriteCounters, pending: PendingBatch, error: String?) {
    var p = PendingBatch(batch)
    var total = WriteCounters()
    var lastError: String?
    for _ in 0..<tries {
        let (c, error) = writer.attempt(&p)
        total += c
        lastError = error
        if error == nil { break }
    }
    return (total, p, lastError)
}

/// XRANGE key - + as [(id, [field: value])].
func xrange(_ server: RedisServer, _ key: String) throws -> [(String, [String: String])] {
    let out = try server.cli(["--raw", "XRANGE", key, "-", "+"])
    guard !out.isEmpty else { return [] }
    let lines = out.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    var entries: [(String, [String: String])] = []
    var i = 0
    while i < lines.count {
        let id = lines[i]
        var end = i + 1
        while end < lines.count, StreamID(lines[end]) == nil { end += 1 }
        var pairs: [(String, String)] = []
        var j = i + 1
        while j + 1 < end {
            pairs.append((lines[j], lines[j + 1]))
            j += 2
        }
        entries.append((id, Dictionary(pairs, uniquingKeysWith: { $1 })))
        i = end
    }
    return entries
}

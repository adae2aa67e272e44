import SpillwayPromQL
import Foundation
import Logging
import RedisSink
import SpillwayBatch
import SpillwayConfig
import SpillwayCore
@testable import SpillwayQuery
import SpillwayTestSupport
import Testing

/// The data the query tests read: cpu records of two hosts and two cpus (`cpu-total`, `cpu0`), two
/// fields each, every 10 s for `count` intervals from `start`, written by the agent's own encoder and
/// writer (so keys, labels, rollups, tags and IDs are as the agent makes them), plus `app` records
/// with a text field (`message`) and a number (`level`).
struct Dataset {
    static let hosts = ["web-1", "web-2"]
    static let cpus = ["cpu-total", "cpu0"]
    static let fields = ["usage_user", "usage_system"]
    static let intervalMs: Int64 = 10_000

    /// The first record's time (ms).
    let start: Int64
    /// Records per host and cpu.
    let count: Int

    /// A value that differs between series and moves irregularly (so min, max, avg, last differ).
    static func value(host: Int, cpu: Int, field: Int, i: Int) -> Double {
        let wiggle: Int = (i * 37 + host * 11 + cpu * 5 + field * 3) % 101
        let base: Int = host * 100 + cpu * 10 + field
        return Double(wiggle) / 4 + Double(base)
    }

    var end: Int64 { start + Int64(count - 1) * Self.intervalMs }

    /// In time order.
    func records() -> [Record] {
        var out: [Record] = []
        for i in 0..<count {
            let ms = start + Int64(i) * Self.intervalMs
            for (h, host) in Self.hosts.enumerated() {
                for (c, cpu) in Self.cpus.enumerated() {
                    out.append(Record(name: "cpu", tags: [Tag("cpu", cpu), Tag("host", host)],
                                      fields: Self.fields.enumerated().map { Field($1, .double(Self.value(host: h, cpu: c, field: $0, i: i))) },
                                      timestamp: ms * 1_000_000))
                }
            }
            if i % 60 == 0 {
                out.append(Record(name: "app", tags: [Tag("host", "web-1")],
                                  fields: [Field("message", .string("started job \(i), \"quoted\", with a comma")), Field("level", .int(Int64(i % 7)))],
                                  timestamp: ms * 1_000_000))
            }
        }
        return out
    }
}

/// `[outputs.redis]` for a server: streams, or timeseries with `rollups`.
func outputConfig(_ url: String, timeseries: Bool, rollups: [String] = []) throws -> RedisOutputConfig {
    var c = RedisOutputConfig()
    c.endpoint = try RedisEndpoint.parse(url)
    if timeseries {
        c.format = .timeseries
        c.key = try KeyTemplate(RedisOutputConfig.defaultSeriesKey, allowField: true)
        c.rollups = rollups.map { RedisOutputConfig.Rollup.parse($0)! }
    }
    return c
}

/// Writes `records` with the agent's encoder and writer, in batches of 500, each until settled.
func fill(_ config: RedisOutputConfig, _ records: [Record]) throws {
    let encoder = BatchEncoder(config: config, routes: [Route(key: config.key, maxlen: 0)], minter: try StreamIDMinter(path: nil))
    let writer = RedisWriter(connection: RedisConnection(options: RedisConnectionOptions(config)), encoder: encoder, logger: Logger(label: "query-test"))
    var i = 0
    while i < records.count {
        let batch = try writer.encode(records[i..<min(records.count, i + 500)].map { QueuedRecord(record: $0, route: 0) }, now: wallClockNanoseconds())
        var p = PendingBatch(batch)
        var settled = false
        for _ in 0..<5 {
            let (_, error) = writer.attempt(&p)
            if error == nil { settled = true; break }
        }
        #expect(settled, "a batch was not written")
        i += 500
    }
}

/// A plain connection for the test's own reads (the figures the query must agree with).
func connect(_ url: String) throws -> RedisConnection {
    RedisConnection(options: RedisConnectionOptions(endpoint: try RedisEndpoint.parse(url)))
}

/// `TS.RANGE key - +`: every raw sample.
func tsSamples(_ c: RedisConnection, _ key: String) throws -> [(Int64, Double)] {
    try c.command(["TS.RANGE", key, "-", "+"]).array!.map { s in (Int64(s.array![0].string!)!, Double(s.array![1].string!)!) }
}

/// `TS.QUERYINDEX filters…`, sorted.
func tsKeys(_ c: RedisConnection, _ filters: [String]) throws -> [String] {
    try c.command(["TS.QUERYINDEX"] + filters).array!.map { $0.string! }.sorted()
}

/// A stream's entries, `XRANGE key - +`: (ms, seq, fields in order).
func streamEntries(_ c: RedisConnection, _ key: String) throws -> [(ms: Int64, id: String, fields: [(String, String)])] {
    try c.command(["XRANGE", key, "-", "+"]).array!.map { e in
        let id = e.array![0].string!
        let flat = e.array![1].array!.map { $0.string! }
        return (Int64(id.split(separator: "-")[0])!, id, stride(from: 0, to: flat.count, by: 2).map { (flat[$0], flat[$0 + 1]) })
    }
}

/// The test's own aggregation: samples in [first, end] into `step` buckets aligned to the epoch.
func expectedBuckets(_ samples: [(Int64, Double)], first: Int64, end: Int64, step: Int64, _ agg: String) -> [(Int64, Double)] {
    var buckets: [Int64: [Double]] = [:]
    for (t, v) in samples where t >= first && t <= end {
        buckets[t - ((t % step) + step) % step, default: []].append(v)
    }
    return buckets.keys.sorted().map { b in
        let vs = buckets[b]!
        let value: Double = switch agg {
        case "avg": vs.reduce(0, +) / Double(vs.count)
        case "min": vs.min()!
        case "max": vs.max()!
        case "sum": vs.reduce(0, +)
        case "count": Double(vs.count)
        case "last": vs.last!
        default: .nan
        }
        return (b, value)
    }
}

/// Equal to 1e-9 of their size (an average of averages is computed in another order).
func close(_ a: Double, _ b: Double) -> Bool { abs(a - b) <= 1e-9 * max(1, abs(a), abs(b)) }

func samePoints(_ got: [Point], _ want: [(Int64, Double)], exact: Bool = true) -> Bool {
    got.count == want.count && zip(got, want).allSatisfy { $0.timestamp == $1.0 && (exact ? $0.value == $1.1 : close($0.value, $1.1)) }
}

// MARK: - The built binary

let testsDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
let repo = testsDir.deletingLastPathComponent()

/// The `spillway` binary built beside this test bundle (or $SPILLWAY_BIN).
let spillwayBin: String = {
    if let bin = ProcessInfo.processInfo.environment["SPILLWAY_BIN"] { return bin }
    var dir = URL(fileURLWithPath: ProcessInfo.processInfo.arguments[0]).deletingLastPathComponent()
    for _ in 0..<4 where !FileManager.default.isExecutableFile(atPath: dir.appendingPathComponent("spillway").path) {
        dir = dir.deletingLastPathComponent()
    }
    return dir.appendingPathComponent("spillway").path
}()

struct CommandResult: CustomStringConvertible {
    var status: Int32
    var stdout: String
    var stderr: String
    var description: String { "exit \(status)\nstdout: \(stdout)\nstderr: \(stderr)" }
}

/// Runs spillway; a run longer than `timeout` seconds is killed and fails the test.
func spillway(_ args: [String], cwd: URL, timeout: TimeInterval = 60) throws -> CommandResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: spillwayBin)
    p.arguments = args
    p.currentDirectoryURL = cwd
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let group = DispatchGroup()
    nonisolated(unsafe) var outData = Data(), errData = Data()
    DispatchQueue.global().async(group: group) { outData = out.fileHandleForReading.readDataToEndOfFile() }
    DispatchQueue.global().async(group: group) { errData = err.fileHandleForReading.readDataToEndOfFile() }
    if group.wait(timeout: .now() + timeout) == .timedOut {
        kill(p.processIdentifier, SIGKILL)
        Issue.record("spillway \(args) did not finish in \(timeout)s")
    }
    p.waitUntilExit()
    return CommandResult(status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self), stderr: String(decoding: errData, as: UTF8.self))
}

/// A temp dir holding `agent.toml` with `text`.
func configDir(_ text: String) throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-query-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    try text.write(to: dir.appendingPathComponent("agent.toml"), atomically: true, encoding: .utf8)
    return dir
}

/// The shipped agent.toml with its Redis url and format replaced (the rest as shipped).
func shippedConfig(url: String, timeseries: Bool, rollups: String = "", query: String = "") throws -> String {
    var text = try String(contentsOf: repo.appendingPathComponent("agent.toml"), encoding: .utf8)
    text = text.replacingOccurrences(of: #"url = "${SPILLWAY_REDIS_URL:-redis://127.0.0.1:6379/0}""#, with: "url = \"\(url)\"")
    text = text.replacingOccurrences(of: #"data_dir = "${SPILLWAY_DATA_DIR:-}""#, with: "data_dir = \"data\"")
    if timeseries {
        text = text.replacingOccurrences(of: "  format = \"stream\"\n", with: "  format = \"timeseries\"\n  rollups = [\(rollups)]\n")
        text = text.replacingOccurrences(of: "  maxlen = 100000\n", with: "")
    }
    // The shipped [query] table, with `query`'s keys.
    if !query.isEmpty { text = text.replacingOccurrences(of: "\n[query]\n", with: "\n[query]\n\(query)\n") }
    return text
}

/// JSON output as Foundation objects.
func jsonArray(_ text: String) throws -> [[String: Any]] {
    try #require(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]])
}

func jsonObject(_ text: String) throws -> [String: Any] {
    try #require(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
}

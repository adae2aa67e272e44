import Foundation
import ProcFS
import SpillwayConfig
import SpillwayCore
import SpillwayInputs

// `make bench` (release build). Each benchmark prints our figure, the reference measured in the same
// run, and their ratio.

/// Writes a fake /proc with `cpus` CPUs, `disks` mounted disks and `interfaces` interfaces.
func makeTree(cpus: Int, disks: Int, interfaces: Int) throws -> String {
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-bench-\(getpid())").path
    let fm = FileManager.default
    try? fm.removeItem(atPath: root)
    for d in ["proc/self", "proc/net", "sys/class/block"] { try fm.createDirectory(atPath: "\(root)/\(d)", withIntermediateDirectories: true) }
    var stat = "cpu  \(cpus * 1000) 10 \(cpus * 500) \(cpus * 90000) 100 0 50 0 0 0\n"
    for i in 0..<cpus { stat += "cpu\(i) \(1000 + i) 10 500 90000 100 0 50 0 0 0\n" }
    stat += "intr 123456 0 0\nctxt 987654\nbtime 1700000000\nprocesses 5000\nprocs_running 3\nprocs_blocked 0\nsoftirq 1 2 3\n"
    try stat.write(toFile: "\(root)/proc/stat", atomically: true, encoding: .utf8)
    try String(contentsOfFile: "/proc/meminfo", encoding: .utf8).write(toFile: "\(root)/proc/meminfo", atomically: true, encoding: .utf8)
    try "0.52 0.58 0.59 2/467 12345\n".write(toFile: "\(root)/proc/loadavg", atomically: true, encoding: .utf8)
    try "350735.47 234388.90\n".write(toFile: "\(root)/proc/uptime", atomically: true, encoding: .utf8)
    var mountinfo = "22 1 0:21 / /proc rw,relatime - proc proc rw\n"
    var diskstats = ""
    for i in 0..<disks {
        mountinfo += "\(100 + i) 1 8:\(i) / /mnt/disk\(i) rw,relatime shared:\(i) - ext4 /dev/sd\(i) rw\n"
        diskstats += "   8 \(i) sd\(i) 31652 5465 4446642 32088 8209 20629 1458048 11455 0 12924 43964 1417 0 447448 323 1247 96\n"
    }
    try mountinfo.write(toFile: "\(root)/proc/self/mountinfo", atomically: true, encoding: .utf8)
    try diskstats.write(toFile: "\(root)/proc/diskstats", atomically: true, encoding: .utf8)
    var netdev = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n"
    for i in 0..<interfaces {
        netdev += "  eth\(i): 10882172     293    0    0    0     0          0         0    17690     209    0    0    0     0       0          0\n"
    }
    try netdev.write(toFile: "\(root)/proc/net/dev", atomically: true, encoding: .utf8)
    return root
}

func cpuNanos(_ body: () -> Void) -> Int64 {
    let start = processCPUTimeNanoseconds()
    body()
    return processCPUTimeNanoseconds() - start
}

func collectBenchmark(iterations: Int) throws {
    // A native (not Foundation-bridged) string, as mount points parsed from mountinfo are.
    let root = String(decoding: Array(try makeTree(cpus: 64, disks: 100, interfaces: 100).utf8), as: UTF8.self)
    defer { try? FileManager.default.removeItem(atPath: root) }
    let configPath = "\(root)/agent.toml"
    try "[agent]\nproc_root = \"\(root)/proc\"\nsys_root = \"\(root)/sys\"\n[[inputs.cpu]]\n[[inputs.mem]]\n[[inputs.disk]]\n[[inputs.diskio]]\n[[inputs.net]]\n[[inputs.system]]\n"
        .write(toFile: configPath, atomically: true, encoding: .utf8)
    var config = try ConfigLoader(registry: InputRegistry.all).load(configPath: configPath)
    // The fake mount points do not exist: statvfs the tree root instead (a real system call each).
    for i in config.inputs.indices {
        if var disk = config.inputs[i].input as? DiskInput {
            disk.statfs = { _, identify throws(ProcFSError) in try FileSystemStats.query(root, identify: identify) }
            config.inputs[i].input = disk
        }
    }
    var records: [Record] = []
    var report = InputReport()
    records.reserveCapacity(512)
    var tick: Int64 = 1_000_000_000
    func collectAll() {
        records.removeAll(keepingCapacity: true)
        tick += 10_000_000_000
        for i in config.inputs.indices {
            report.removeAll()
            if let e = config.inputs[i].collect(agent: config.agent, now: tick, into: &records, report: &report) { fatalError("\(e)") }
            if report.skippedCount > 0 { fatalError("\(report.skipped)") }
        }
    }
    collectAll()  // the cpu baseline
    // On a real host the counters move between collections; here stat is rewritten before each
    // collection (outside the measured time) with idle counters that grow, so cpu does its full work.
    let statPath = "\(root)/proc/stat"
    let statText = try String(contentsOfFile: statPath, encoding: .utf8)
    func writeStat(_ i: Int) {
        let moved = statText.replacingOccurrences(of: " 90000 ", with: " \(90100 + i * 100) ")
            .replacingOccurrences(of: " \(64 * 90000) ", with: " \(64 * (90100 + i * 100)) ")
        guard FileManager.default.createFile(atPath: statPath, contents: Data(moved.utf8)) else { fatalError("cannot write \(statPath)") }
    }

    // Reference: the I/O floor of the same collection: read every file it reads, and the 100 statvfs.
    let files = ["stat", "meminfo", "self/mountinfo", "diskstats", "net/dev", "loadavg", "uptime", "stat"]
    let proc = ProcFS(root: root + "/proc")
    var sink = 0
    func readAll() {
        for f in files { sink &+= (try? proc.read(f).count) ?? 0 }
        for _ in 0..<100 { sink &+= Int((try? FileSystemStats.query(root, identify: false))?.blocks ?? 0) }
    }

    // Interleave ours and the reference so both see the same machine state.
    var ours: Int64 = 0, reference: Int64 = 0
    for i in 0..<iterations {
        writeStat(i)
        ours += cpuNanos { collectAll() }
        reference += cpuNanos { readAll() }
    }
    let perCollection = records.count
    let oursUs = Double(ours) / Double(iterations) / 1000
    let refUs = Double(reference) / Double(iterations) / 1000
    print("collect: all six inputs, 64 CPUs, 100 disks, 100 interfaces, \(perCollection) records per collection, \(iterations) collections")
    print(String(format: "  spillway collect        %8.1f us CPU per collection   (target < 1000 us)", oursUs))
    print(String(format: "  reference (read+statvfs) %7.1f us CPU per collection", refUs))
    print(String(format: "  ratio                   %8.2fx the I/O floor", oursUs / refUs))
    // Where the time goes, input by input.
    for i in config.inputs.indices {
        var spent: Int64 = 0
        let n = max(1, iterations / 4)
        for k in 0..<n {
            if config.inputs[i].plugin == "cpu" { writeStat(iterations + k) }
            records.removeAll(keepingCapacity: true)
            report.removeAll()
            tick += 10_000_000_000
            spent += cpuNanos { _ = config.inputs[i].collect(agent: config.agent, now: tick, into: &records, report: &report) }
        }
        let label = config.inputs[i].plugin.padding(toLength: 8, withPad: " ", startingAt: 0)
        print("    " + label + String(format: "%8.1f us CPU, %d records", Double(spent) / Double(n) / 1000, records.count))
    }
    if sink == 42 { print("") }
}

pinMallocMmapThreshold()  // as `spillway run` does
let env = ProcessInfo.processInfo.environment
let only = env["BENCH_ONLY"]
if only == nil || only == "collect" {
    try collectBenchmark(iterations: Int(env["BENCH_ITERATIONS"] ?? "") ?? 2000)
}
if only == nil || only == "write" || only == "write-stream" || only == "write-timeseries" {
    try writerBenchmarks(records: Int(env["BENCH_RECORDS"] ?? "") ?? 500_000, rounds: Int(env["BENCH_ROUNDS"] ?? "") ?? 5,
                         streams: only != "write-timeseries", timeseries: only != "write-stream")
}
if only == nil || only == "spool" {
    try spoolBenchmarks(backlog: Int(env["BENCH_BACKLOG"] ?? "") ?? 5_000_000)
}
if only == nil || only == "query" {
    try queryBenchmarks(rounds: Int(env["BENCH_ROUNDS"] ?? "") ?? 5)
}
if only == nil || only == "tail" {
    try tailBenchmarks(lines: Int(env["BENCH_LINES"] ?? "") ?? 1_000_000, rounds: Int(env["BENCH_ROUNDS"] ?? "") ?? 5)
}
if only == nil || only == "aggregate" {
    try aggregateBenchmark(entries: Int(env["BENCH_AGG_ENTRIES"] ?? "") ?? 200_000, rounds: Int(env["BENCH_ROUNDS"] ?? "") ?? 1)
}

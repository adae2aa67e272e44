import Foundation
import ProcFS
import SpillwayConfig
import SpillwayCore
import SpillwayInputs
import Testing

/// Every folder `Fixtures/<input>/<case>/` is a test: `input.toml` declares the input (loaded through
/// the real config loader), `step0/`, `step1/`, … are fake roots (`proc/`, `sys/`) collected in order at
/// t = 1s, 2s, …, `statvfs.txt` (disk) answers statvfs, and `expected.txt` holds what the last step
/// gave: its line protocol, then a `skipped: <path:line: text>` line per part left out, a
/// `note: <text>` line per notice, and `error: <text>` when the collection failed. When input.toml
/// sets `[agent] host_root`, statvfs.txt still names host mount points (host_root is taken off the
/// paths asked for).
/// `SPILLWAY_UPDATE_FIXTURES=1 swift test` rewrites expected.txt (then review the diff by hand).
let fixturesRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures").path

func fixtureCases() -> [String] {
    let fm = FileManager.default
    var cases: [String] = []
    for input in (try? fm.contentsOfDirectory(atPath: fixturesRoot)) ?? [] {
        for c in (try? fm.contentsOfDirectory(atPath: "\(fixturesRoot)/\(input)")) ?? [] {
            cases.append("\(input)/\(c)")
        }
    }
    return cases.sorted()
}

struct FixtureRun {
    var output: String
    var error: String?
}

/// Parses statvfs.txt: `mount-point frsize blocks bfree bavail files ffree [dev=major:minor]` (the
/// mount point may hold spaces; the numbers are taken from the right). Without `dev=`, the device is
/// unknown and not checked.
func loadStatvfs(_ path: String) -> [String: FileSystemStats] {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [:] }
    var table: [String: FileSystemStats] = [:]
    for line in text.split(separator: "\n") {
        var parts = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        var device: DeviceNumber?
        if let last = parts.last, last.hasPrefix("dev=") {
            let mm = last.dropFirst(4).split(separator: ":").compactMap { UInt32($0) }
            device = DeviceNumber(major: mm[0], minor: mm[1])
            parts.removeLast()
        }
        guard parts.count >= 7 else { continue }
        let n = parts.suffix(6).compactMap { UInt64($0) }
        parts.removeLast(6)
        table[parts.joined(separator: " ")] = FileSystemStats(
            fragmentSize: n[0], blocks: n[1], blocksFree: n[2], blocksAvailable: n[3], files: n[4], filesFree: n[5], device: device)
    }
    return table
}

func runFixture(_ name: String) throws -> FixtureRun {
    let dir = "\(fixturesRoot)/\(name)"
    let config = try ConfigLoader(registry: InputRegistry.all, environment: [:], defaultHostname: "test")
        .load(configPath: "\(dir)/input.toml")
    #expect(config.inputs.count == 1)
    var instance = config.inputs[0]
    let steps = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix("step") }.sorted()
    var run = FixtureRun(output: "")
    for (i, step) in steps.enumerated() {
        var agent = config.agent
        let stepRoot = "\(dir)/\(step)"
        agent.procRoot = "\(stepRoot)/proc"
        agent.sysRoot = "\(stepRoot)/sys"
        if var disk = instance.input as? DiskInput {
            // The table is keyed by mount point: a host root in front of it is taken off.
            let table = loadStatvfs("\(dir)/statvfs.txt")
            let prefix = agent.hostRoot
            disk.statfs = { path, _ throws(ProcFSError) in
                let key = prefix.isEmpty ? path : (path == prefix ? "/" : String(path.dropFirst(prefix.count)))
                guard let s = table[key] else { throw ProcFSError(path: path, kind: "unreachable", reason: "No such file or directory") }
                return s
            }
            instance.input = disk
        }
        var records: [Record] = []
        var report = InputReport()
        let error = instance.collect(agent: agent, now: Int64(i + 1) * 1_000_000_000, into: &records, report: &report)
        LineProtocol.stableSort(&records)
        var output = LineProtocol.encode(records)
        for e in report.skipped { output += "skipped: \(e)\n" }
        for e in report.notices { output += "note: \(e)\n" }
        if let error { output += "error: \(error)\n" }
        run = FixtureRun(output: output.replacingOccurrences(of: dir + "/", with: ""), error: error.map { "\($0)" })
    }
    return run
}

@Test(arguments: fixtureCases())
func fixture(_ name: String) throws {
    let run = try runFixture(name)
    let expectedPath = "\(fixturesRoot)/\(name)/expected.txt"
    let actual = run.output
    if ProcessInfo.processInfo.environment["SPILLWAY_UPDATE_FIXTURES"] == "1" {
        try actual.write(toFile: expectedPath, atomically: true, encoding: .utf8)
    }
    let expected = try String(contentsOfFile: expectedPath, encoding: .utf8)
    #expect(actual == expected, "fixture \(name)")
}

@Test func everyInputHasFixtures() {
    let withFixtures = Set(fixtureCases().map { String($0.split(separator: "/")[0]) })
    // Procfs inputs are tested on fixture trees; tail (continuous) on real files in TailerTests;
    // exec and execd on real commands in ExecTests.
    #expect(InputRegistry.all.filter { !$0.scheduled }.map(\.name) == ["tail", "execd"])
    for d in InputRegistry.all where d.scheduled && d.name != "exec" {
        #expect(withFixtures.contains(d.name), "input \(d.name) has no fixture cases")
        // Each input has at least one failing (malformed file) case besides its good ones.
        #expect(fixtureCases().contains { $0.hasPrefix("\(d.name)/garbage") }, "input \(d.name) has no garbage case")
    }
}

import Foundation
import SpillwayTestSupport
import Testing

let testsDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
let repo = testsDir.deletingLastPathComponent()

/// The `spillway` binary built beside this test bundle (or $SPILLWAY_BIN).
let spillwayBin: String = {
    if let bin = ProcessInfo.processInfo.environment["SPILLWAY_BIN"] { return bin }
    var dir = URL(fileURLWithPath: ProcessInfo.processInfo.arguments[0]).deletingLastPathComponent()
    // Inside an .xctest bundle on some platforms: walk up to the build products directory.
    for _ in 0..<4 where !FileManager.default.isExecutableFile(atPath: dir.appendingPathComponent("spillway").path) {
        dir = dir.deletingLastPathComponent()
    }
    return dir.appendingPathComponent("spillway").path
}()

struct Result {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs spillway with a time limit; a process still running after `timeout` seconds is killed and the
/// test fails.
/// (`executable` runs another program instead, e.g. setpriv to run spillway as another user.)
func spillway(_ args: [String], env: [String: String] = [:], cwd: URL = repo, timeout: TimeInterval = 60,
              executable: String = spillwayBin) throws -> Result {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = args
    p.currentDirectoryURL = cwd
    p.environment = ProcessInfo.processInfo.environment.merging(env) { $1 }
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
    return Result(status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self), stderr: String(decoding: errData, as: UTF8.self))
}

// MARK: - A line protocol parser, to read `once` back

struct Line: Equatable {
    var measurement: String
    var tags: [String: String]
    var fields: [String: String]
    var timestamp: Int64

    func double(_ key: String) -> Double? { fields[key].flatMap { Double($0.hasSuffix("u") || $0.hasSuffix("i") ? String($0.dropLast()) : $0) } }
}

/// Parses one line per the Influx spec: `\` escapes in names, quoted string fields, typed numbers.
func parseLine(_ text: String) throws -> Line {
    struct Bad: Error { var why: String }
    let c = Array(text)
    var i = 0
    func name(stops: Set<Character>) -> String {
        var s = ""
        while i < c.count, !stops.contains(c[i]) {
            if c[i] == "\\", i + 1 < c.count {
                let n = c[i + 1]
                switch n {
                case "n": s.append("\n")
                case "t": s.append("\t")
                case "r": s.append("\r")
                case "f": s.append("\u{0C}")
                case ",", "=", " ": s.append(n)
                default: s.append("\\"); s.append(n)
                }
                i += 2
            } else {
                s.append(c[i])
                i += 1
            }
        }
        return s
    }
    var line = Line(measurement: name(stops: [",", " "]), tags: [:], fields: [:], timestamp: 0)
    guard !line.measurement.isEmpty else { throw Bad(why: "empty measurement") }
    while i < c.count, c[i] == "," {
        i += 1
        let k = name(stops: ["="])
        guard i < c.count, c[i] == "=" else { throw Bad(why: "tag without =") }
        i += 1
        let v = name(stops: [",", " "])
        guard !k.isEmpty, !v.isEmpty else { throw Bad(why: "empty tag") }
        line.tags[k] = v
    }
    guard i < c.count, c[i] == " " else { throw Bad(why: "no fields") }
    repeat {
        i += 1
        let k = name(stops: ["="])
        guard i < c.count, c[i] == "=" else { throw Bad(why: "field without =") }
        i += 1
        var v = ""
        if i < c.count, c[i] == "\"" {
            i += 1
            while i < c.count, c[i] != "\"" {
                if c[i] == "\\", i + 1 < c.count { i += 1 }
                v.append(c[i])
                i += 1
            }
            guard i < c.count else { throw Bad(why: "unterminated string") }
            i += 1
        } else {
            while i < c.count, c[i] != ",", c[i] != " " { v.append(c[i]); i += 1 }
            let number = v.hasSuffix("i") || v.hasSuffix("u") ? String(v.dropLast()) : v
            guard Double(number) != nil || v == "true" || v == "false" else { throw Bad(why: "bad field value \(v)") }
        }
        line.fields[k] = v
    } while i < c.count && c[i] == ","
    guard i < c.count, c[i] == " ", let ts = Int64(String(c[(i + 1)...])) else { throw Bad(why: "no timestamp") }
    line.timestamp = ts
    return line
}

func procLines(_ path: String) -> [String] {
    ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
}

@Suite(.serialized) struct OnceOnThisMachine {
    @Test func printsValidLineProtocolAgreeingWithProc() throws {
        let uptimeBefore = Double(procLines("/proc/uptime")[0].split(separator: " ")[0])!
        let r = try spillway(["once", "--config", "agent.toml"])
        let uptimeAfter = Double(procLines("/proc/uptime")[0].split(separator: " ")[0])!
        #expect(r.status == 0, "\(r.stderr)")
        let lines = try r.stdout.split(separator: "\n").map { try parseLine(String($0)) }
        #expect(Set(lines.map(\.measurement)) == ["cpu", "mem", "disk", "diskio", "net", "system"])
        // Stable order: sorted by name.
        #expect(lines.map(\.measurement) == lines.map(\.measurement).sorted())
        for l in lines { #expect(l.tags["host"] != nil && !l.tags["host"]!.isEmpty) }

        // cpu: one record per core and the total; percentages add up to 100.
        let cores = procLines("/proc/stat").filter { $0.hasPrefix("cpu") && !$0.hasPrefix("cpu ") }.count
        let cpu = lines.filter { $0.measurement == "cpu" }
        #expect(cpu.count == cores + 1)
        #expect(cpu.contains { $0.tags["cpu"] == "cpu-total" })
        for l in cpu {
            let sum = ["usage_user", "usage_system", "usage_idle", "usage_nice", "usage_iowait", "usage_irq", "usage_softirq", "usage_steal"]
                .compactMap { l.double($0) }.reduce(0, +)
            #expect(abs(sum - 100) < 0.001, "\(l)")
            #expect(l.fields.count == 11)
        }

        // mem: totals exactly as /proc/meminfo says.
        let mem = try #require(lines.first { $0.measurement == "mem" })
        let memTotal = procLines("/proc/meminfo").first { $0.hasPrefix("MemTotal:") }!.split(separator: " ")[1]
        #expect(mem.fields["total"] == "\(UInt64(memTotal)! * 1024)u")
        #expect(mem.fields.count == 13)

        // system: n_cpus and uptime as /proc says.
        let system = try #require(lines.first { $0.measurement == "system" })
        #expect(system.fields["n_cpus"] == "\(cores)i")
        let uptime = try #require(system.double("uptime"))
        #expect(uptime >= uptimeBefore.rounded(.down) && uptime <= uptimeAfter)

        // disk: / is there with statvfs's total.
        var s = statvfs()
        #expect(statvfs("/", &s) == 0)
        let root = try #require(lines.first { $0.measurement == "disk" && $0.tags["path"] == "/" })
        #expect(root.fields["total"] == "\(UInt64(s.f_blocks) * UInt64(s.f_frsize))u")

        // diskio: every device of /proc/diskstats.
        let devices = Set(procLines("/proc/diskstats").map { String($0.split(separator: " ")[2]) })
        #expect(Set(lines.filter { $0.measurement == "diskio" }.map { $0.tags["name"]! }) == devices)

        // net: every interface but lo.
        let ifaces = Set(procLines("/proc/net/dev").dropFirst(2).map { String($0.split(separator: ":")[0].trimmingCharacters(in: .whitespaces)) })
        #expect(Set(lines.filter { $0.measurement == "net" }.map { $0.tags["interface"]! }) == ifaces.subtracting(["lo"]))
    }

    @Test func inputFilterAndFixtureRootThroughTheEnvironment() throws {
        let root = testsDir.appendingPathComponent("SpillwayInputsTests/Fixtures/mem/basic/step0/proc").path
        let r = try spillway(["once", "--config", "agent.toml", "--input", "mem"], env: ["SPILLWAY_PROC_ROOT": root])
        #expect(r.status == 0, "\(r.stderr)")
        let lines = try r.stdout.split(separator: "\n").map { try parseLine(String($0)) }
        #expect(lines.count == 1)
        #expect(lines[0].fields["total"] == "25276510208u")
        #expect(lines[0].fields["used"] == "85417984u")
    }

    @Test func aFailingInputDoesNotStopTheOthers() throws {
        let root = testsDir.appendingPathComponent("SpillwayInputsTests/Fixtures/mem/basic/step0/proc").path
        let r = try spillway(["once", "--config", "agent.toml"], env: ["SPILLWAY_PROC_ROOT": root])
        #expect(r.status == 1)
        #expect(r.stdout.hasPrefix("mem,"))
        #expect(r.stdout.split(separator: "\n").count == 1)
        for name in ["cpu", "disk", "diskio", "net", "system"] {
            #expect(r.stderr.contains("spillway: input \(name) ("), "\(r.stderr)")
        }
        #expect(!r.stderr.contains("Fatal error"))
    }

    @Test func unknownInputName() throws {
        let r = try spillway(["once", "--config", "agent.toml", "--input", "cpus"])
        #expect(r.status != 0)
        #expect(r.stderr.contains("did you mean \"cpu\"?"))
    }
}

@Suite struct CheckCommand {
    @Test func shippedConfigIsValid() throws {
        let r = try spillway(["check", "--config", "agent.toml"])
        #expect(r.status == 0, "\(r.stderr)")
        // agent.toml and 9 plugins.d samples (exec.toml and execd.toml are commented out: no input).
        #expect(r.stdout.contains("configuration OK: 10 files, 7 inputs"))
        #expect(r.stdout.contains("input tail (./plugins.d/tail.toml:4) files=/var/log/app/*.log format=raw name=log from_beginning=false"))
        for name in ["cpu", "mem", "disk", "diskio", "net", "system"] {
            #expect(r.stdout.contains("input \(name) (./plugins.d/\(name).toml:"))
        }
    }

    /// Every malformed config of SpillwayConfigTests exits 2 with its located error and no stack trace.
    @Test func malformedConfigsExitTwo() throws {
        let dir = testsDir.appendingPathComponent("SpillwayConfigTests/Malformed")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".toml") }.sorted()
        #expect(files.count >= 15)
        for f in files {
            let path = dir.appendingPathComponent(f).path
            let header = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")[0]
            let expectedLine = header.dropFirst("# expect: ".count).prefix { $0.isNumber }
            let r = try spillway(["check", "--config", path])
            #expect(r.status == 2, "\(f): \(r.stderr)")
            #expect(r.stderr.contains("\(path):\(expectedLine): "), "\(f): \(r.stderr)")
            #expect(r.stdout.isEmpty)
            #expect(!r.stderr.contains("Fatal error") && !r.stderr.contains("Stack"), "\(f)")
        }
    }

    @Test func missingConfigExitsTwo() throws {
        let r = try spillway(["check", "--config", "/nonexistent/agent.toml"])
        #expect(r.status == 2)
        #expect(r.stderr.contains("/nonexistent/agent.toml: config file not found"))
    }

    @Test func versionAndHelp() throws {
        // A plain `swift build` (as here) is not stamped: `make release` puts the commit and date there
        // (scripts/test-install checks the stamped binary).
        #expect(try spillway(["--version"]).stdout == "0.1.0 (commit unknown, built unknown)\n")
        for cmd in ["run", "once", "check"] {
            let r = try spillway([cmd, "--help"])
            #expect(r.status == 0)
            #expect(r.stdout.contains("--config"))
        }
    }
}

@Suite struct RunCommand {
    @Test func collectsOnScheduleAndStopsOnSIGTERM() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-run-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try "[agent]\ninterval = \"200ms\"\n[[inputs.mem]]\n[[inputs.system]]\n".write(to: dir.appendingPathComponent("agent.toml"), atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: spillwayBin)
        p.arguments = ["run", "--config", dir.appendingPathComponent("agent.toml").path, "--log-level", "debug"]
        let errFile = dir.appendingPathComponent("stderr")
        _ = FileManager.default.createFile(atPath: errFile.path, contents: nil)
        p.standardError = try FileHandle(forWritingTo: errFile)
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        // Wait (at most 10 s) until at least two collections of each input were logged.
        let deadline = Date().addingTimeInterval(10)
        var log = ""
        while Date() < deadline {
            log = (try? String(contentsOf: errFile, encoding: .utf8)) ?? ""
            if log.components(separatedBy: "line=\"mem,").count > 2 && log.components(separatedBy: "line=\"system,").count > 2 { break }
            usleep(50_000)
        }
        kill(p.processIdentifier, SIGTERM)
        let stopDeadline = Date().addingTimeInterval(10)
        while p.isRunning && Date() < stopDeadline { usleep(20_000) }
        if p.isRunning {
            kill(p.processIdentifier, SIGKILL)
            Issue.record("spillway run did not stop within 10 s of SIGTERM")
        }
        p.waitUntilExit()
        log = (try? String(contentsOf: errFile, encoding: .utf8)) ?? ""
        #expect(p.terminationStatus == 0, "\(log)")
        #expect(log.components(separatedBy: "line=\"mem,").count > 2, "\(log)")
        #expect(log.contains("stopped"))
        #expect(!log.contains("input failed"))
    }
}

@Suite struct RunToRedis {
    /// `spillway run` with the repo's agent.toml fills metrics:<host>:<input> in Redis.
    @Test func shippedConfigFillsTheStreams() throws {
        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        let dataDir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-data-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dataDir) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: spillwayBin)
        p.arguments = ["run", "--config", "agent.toml"]
        p.currentDirectoryURL = repo
        p.environment = ProcessInfo.processInfo.environment.merging(
            ["SPILLWAY_REDIS_URL": server.url, "SPILLWAY_DATA_DIR": dataDir.path]) { $1 }
        let log = dataDir.appendingPathExtension("log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: log) }
        p.standardError = try FileHandle(forWritingTo: log)
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        let host = try spillway(["check", "--config", "agent.toml"]).stdout
            .split(separator: "\n").first { $0.hasPrefix("agent: hostname=") }!
            .dropFirst("agent: hostname=".count).prefix { $0 != " " }
        let names = ["cpu", "mem", "disk", "diskio", "net", "system"]
        // The shipped interval is 10 s and cpu needs two collections: wait at most 45 s.
        let deadline = Date().addingTimeInterval(45)
        var lengths: [String: Int] = [:]
        while Date() < deadline {
            lengths = [:]
            for n in names { lengths[n] = Int(try server.cli(["XLEN", "metrics:\(host):\(n)"])) ?? 0 }
            if lengths.values.allSatisfy({ $0 > 0 }) { break }
            usleep(250_000)
        }
        kill(p.processIdentifier, SIGTERM)
        let stop = Date().addingTimeInterval(15)
        while p.isRunning && Date() < stop { usleep(20_000) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL); Issue.record("run did not stop within 15 s of SIGTERM") }
        p.waitUntilExit()
        let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        #expect(p.terminationStatus == 0, "\(text)")
        for n in names { #expect((lengths[n] ?? 0) > 0, "metrics:\(host):\(n) is empty; log: \(text)") }
        // A mem entry: 13 fields, tag_host, timestamp; an explicit ms-seq ID.
        let entry = try server.cli(["--raw", "XREVRANGE", "metrics:\(host):mem", "+", "-", "COUNT", "1"]).split(separator: "\n").map(String.init)
        #expect(entry.count == 1 + 2 * 15, "\(entry)")
        #expect(entry.first?.range(of: #"^[0-9]+-[0-9]+$"#, options: .regularExpression) != nil)
        #expect(entry.contains("tag_host") && entry.contains("available_percent") && entry.contains("timestamp"))
        // The writer's final count matches what Redis holds.
        var total = 0
        for n in names { total += Int(try server.cli(["XLEN", "metrics:\(host):\(n)"])) ?? 0 }
        total += internalInRedis(server, host: String(host))
        #expect(text.contains("writer.written=\(total)"), "\(total) entries; log: \(text)")
        #expect(text.contains("writer.dropped=0") && text.contains("writer.rejected=0"))
        // The high-water marks were saved in data_dir, 0600 in a 0700 directory.
        let marks = dataDir.appendingPathComponent("stream-ids").path
        #expect((try FileManager.default.attributesOfItem(atPath: marks)[.posixPermissions] as? Int) == 0o600)
        #expect((try FileManager.default.attributesOfItem(atPath: dataDir.path)[.posixPermissions] as? Int) == 0o700)
    }

    @Test func checkWarnsOnExplicitIDsWithoutHost() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-warn-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try "[outputs.redis]\nkey = \"shared:{name}\"\n[[inputs.mem]]\n".write(to: dir.appendingPathComponent("agent.toml"), atomically: true, encoding: .utf8)
        let r = try spillway(["check", "--config", dir.appendingPathComponent("agent.toml").path])
        #expect(r.status == 0)
        #expect(r.stdout.contains("warning: \(dir.path)/agent.toml:2: outputs.redis.key: key \"shared:{name}\" has no {host} but ids = \"explicit\""), "\(r.stdout)")
    }
}

@Suite struct PluginsAndConfig {
    @Test func pluginsListsEveryInputAndDescribesOne() throws {
        let list = try spillway(["plugins"])
        #expect(list.status == 0)
        let shipped = try FileManager.default.contentsOfDirectory(atPath: repo.appendingPathComponent("plugins.d").path)
            .filter { $0.hasSuffix(".toml") }.map { String($0.dropLast(5)) }
        for name in shipped { #expect(list.stdout.contains("\n\(name) ") || list.stdout.hasPrefix("\(name) "), "\(name) not listed: \(list.stdout)") }
        let cpu = try spillway(["plugins", "cpu"])
        #expect(cpu.status == 0 && cpu.stdout.range(of: #"\n  percpu +true\n"#, options: .regularExpression) != nil && cpu.stdout.contains("Sample (plugins.d/cpu.toml):"), "\(cpu.stdout)")
        let bad = try spillway(["plugins", "cpux"])
        #expect(bad.status == 64 && bad.stderr.contains("no input \"cpux\"; did you mean \"cpu\"?"), "\(bad.stderr)")
    }

    /// `spillway config` is a complete configuration: saved alone, it checks and declares the
    /// shipped inputs.
    @Test func configIsACompleteValidSample() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-config-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("plugins.d"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try spillway(["config"])
        #expect(r.status == 0)
        try r.stdout.write(to: dir.appendingPathComponent("agent.toml"), atomically: true, encoding: .utf8)
        let check = try spillway(["check", "--config", dir.appendingPathComponent("agent.toml").path], env: ["SPILLWAY_DATA_DIR": dir.appendingPathComponent("data").path])
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
        let shippedCheck = try spillway(["check", "--config", "agent.toml"])
        let inputs = { (s: String) in s.split(separator: "\n").first { $0.hasPrefix("configuration OK") }.map { String($0.split(separator: ",").last ?? "") } }
        #expect(inputs(check.stdout) != nil && inputs(check.stdout) == inputs(shippedCheck.stdout), "\(check.stdout)")
    }
}

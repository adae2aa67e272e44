import Foundation
import SpillwayCore
@testable import SpillwayInputs
import Testing

/// Whether `pid` is a live process (a zombie counts as gone).
func processAlive(_ pid: Int32) -> Bool {
    guard pid > 0, kill(pid, 0) == 0 else { return false }
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return false }
    let state = stat[stat.index(close, offsetBy: 2)]
    return state != "Z" && state != "X"
}

/// Waits (at most `seconds`) until none of `pids` is alive; returns those still alive.
func waitGone(_ pids: [Int32], seconds: Double = 5) -> [Int32] {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if !pids.contains(where: processAlive) { return [] }
        usleep(20_000)
    }
    return pids.filter(processAlive)
}

/// Real commands run through `ExecInput.collect`, each bounded in time.
@Suite struct ExecRuns {
    let dir: URL

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-exec-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    func input(_ argv: [String], format: ExecDataFormat = .influx, configure: (inout ExecOptions) -> Void = { _ in }) -> ExecInput {
        var o = ExecOptions(command: ExecCommand(argv: argv))
        o.dataFormat = format
        configure(&o)
        return ExecInput(options: o)
    }

    func sh(_ script: String, format: ExecDataFormat = .influx, configure: (inout ExecOptions) -> Void = { _ in }) -> ExecInput {
        input(["/bin/sh", "-c", script], format: format, configure: configure)
    }

    func run(_ input: ExecInput, now: Int64 = 1_000) async -> (records: [Record], report: InputReport, error: InputError?, seconds: Double) {
        var records: [Record] = []
        var report = InputReport()
        let start = Date()
        do throws(InputError) {
            _ = try await input.collect(now: now, stop: ExecStop(), into: &records, report: &report)
            return (records, report, nil, Date().timeIntervalSince(start))
        } catch {
            return (records, report, error, Date().timeIntervalSince(start))
        }
    }

    func pids(_ file: String) -> [Int32] {
        ((try? String(contentsOf: dir.appendingPathComponent(file), encoding: .utf8)) ?? "")
            .split(separator: "\n").compactMap { Int32($0.trimmingCharacters(in: .whitespaces)) }
    }

    @Test func influxOutputBecomesRecords() async throws {
        let r = await run(sh(#"printf 'disk,dev=sda used=1.5,n=3i,ok=true,s="a b" 1700000000000000000\nload v=2u\n'"#), now: 5_000)
        #expect(r.error == nil && r.report.skipped.isEmpty)
        #expect(r.records == [
            Record(name: "disk", tags: [Tag("dev", "sda")], fields: [Field("used", .double(1.5)), Field("n", .int(3)), Field("ok", .bool(true)), Field("s", .string("a b"))],
                   timestamp: 1_700_000_000_000_000_000),
            Record(name: "load", fields: [Field("v", .uint(2))], timestamp: 5_000),
        ])
    }

    @Test func jsonOutputBecomesRecords() async throws {
        let doc = #"[{"name":"app","tags":{"role":"web"},"fields":{"req":12,"lat":0.5,"up":true,"ver":"1.2","gone":null},"timestamp":1700000000000000000},"#
            + #"{"name":"q","fields":{"depth":-4}}]"# + "\n" + #"{"name":"third","fields":{"x":1e2}}"#
        let r = await run(sh("cat <<'EOF'\n\(doc)\nEOF", format: .json), now: 9)
        #expect(r.error == nil && r.report.skipped.isEmpty)
        #expect(r.records == [
            Record(name: "app", tags: [Tag("role", "web")], fields: [Field("req", .int(12)), Field("lat", .double(0.5)), Field("up", .bool(true)), Field("ver", .string("1.2"))],
                   timestamp: 1_700_000_000_000_000_000),
            Record(name: "q", fields: [Field("depth", .int(-4))], timestamp: 9),
            Record(name: "third", fields: [Field("x", .double(100))], timestamp: 9),
        ])
    }

    @Test func aBadLineIsDroppedAloneAndQuoted() async throws {
        let r = await run(sh(#"printf 'good v=1\nthis is not it\ngood v=2\nalso,bad\n'"#))
        #expect(r.error == nil)
        #expect(r.records.map { $0.field("v") } == [.double(1), .double(2)])
        #expect(r.report.skipped.count == 2)
        let first = try #require(r.report.skipped.first)
        #expect(first.path == "/bin/sh" && first.line == 2 && first.kind == "bad line")
        #expect(first.message.contains(#""this is not it""#), "\(first.message)")
        #expect(r.report.skipped[1].line == 4 && r.report.skipped[1].message.contains(#""also,bad""#))
    }

    @Test func manyBadLinesAreCountedButOnlyTheFirstAreListed() async throws {
        var records: [Record] = []
        var report = InputReport()
        let note = try await sh("i=0; while [ $i -lt 5000 ]; do echo garbage; i=$((i+1)); done; echo 'good v=1'")
            .collect(now: 1, stop: ExecStop(), into: &records, report: &report)
        #expect(records.count == 1)
        // All 5000 counted; the first listed (at most InputReport.kept).
        #expect(report.skippedCount == 5000 && note.unlisted == 0)
        #expect(report.skipped.count == min(ExecOutput.maxReported, InputReport.kept))
        #expect(report.skipped.first?.line == 1 && report.skipped.last?.line == report.skipped.count)
    }

    @Test func badJSONObjectsAreDroppedAloneAndUnparsableJSONFailsTheRun() async throws {
        let some = await run(sh(#"echo '[{"name":"ok","fields":{"v":1}},{"name":"x","fields":{"v":[1]}},{"fields":{"v":1}},{"name":"y","fields":{"v":1},"tag":{}}]'"#, format: .json))
        #expect(some.error == nil && some.records.map(\.name) == ["ok"])
        #expect(some.report.skipped.map(\.message).map { $0.components(separatedBy: ", object dropped").first ?? "" } == [
            "field \"v\" must be a number, string or boolean", "no \"name\"", "unknown key \"tag\" (known: name, tags, fields, timestamp)",
        ])
        let broken = await run(sh(#"printf '{"name":"a","fields":{"v":1}}\n{"name": oops}\n'"#, format: .json))
        #expect(broken.records.isEmpty)
        let text = try #require(broken.error?.description)
        #expect(text.contains("output is not JSON (line 2") && text.contains(#""{\"name\": oops}""#), "\(text)")
    }

    @Test func aNonZeroExitFailsTheRunAndKeepsNothing() async throws {
        let r = await run(sh("echo 'm v=1'; echo 'it broke' >&2; exit 3"))
        #expect(r.records.isEmpty)
        let text = try #require(r.error?.description)
        #expect(text.contains("exited with status 3") && text.contains(#"stderr: "it broke\n""#), "\(text)")
    }

    @Test func aCrashIsAnErrorNamingTheSignal() async throws {
        let r = await run(sh("echo 'm v=1'; kill -SEGV $$"))
        #expect(r.records.isEmpty)
        let text = try #require(r.error?.description)
        #expect(text.contains("killed by signal 11 (SIGSEGV)"), "\(text)")
    }

    @Test func aCommandThatCannotStartIsAnError() async throws {
        let r = await run(input([dir.appendingPathComponent("missing").path]))
        let text = try #require(r.error?.description)
        #expect(text.contains("cannot start"), "\(text)")
        let notFound = await run(input(["spillway-no-such-program-\(UUID().uuidString)"]))
        #expect(notFound.error != nil)
    }

    @Test func aSlowCommandAndItsChildrenAreKilledAtTheTimeout() async throws {
        let file = dir.appendingPathComponent("pids").path
        // The shell, a background child and a foreground child; the shell ignores SIGTERM, so
        // only SIGKILL (after kill_grace) ends it.
        let r = await run(sh("trap '' TERM; echo $$ > \(file); sleep 30 & echo $! >> \(file); sleep 31 & echo $! >> \(file); echo 'm v=1'; wait") { o in
            o.timeout = 500_000_000
            o.killGrace = 300_000_000
        })
        let text = try #require(r.error?.description)
        #expect(text.contains("ran past its timeout of 500ms") && text.contains("SIGKILL"), "\(text)")
        #expect(r.records.isEmpty)
        #expect(r.seconds >= 0.7 && r.seconds < 5, "\(r.seconds)")
        let started = pids("pids")
        #expect(started.count == 3)
        #expect(waitGone(started).isEmpty, "left running: \(started.filter(processAlive))")
    }

    @Test func whatACommandLeavesBehindInItsGroupIsKilled() async throws {
        let file = dir.appendingPathComponent("bg").path
        // The command exits at once; its child keeps running with stdout closed.
        let r = await run(sh("sleep 30 >/dev/null 2>&1 & echo $! > \(file); echo 'm v=1'"))
        #expect(r.error == nil && r.records.count == 1)
        let started = pids("bg")
        #expect(started.count == 1)
        #expect(waitGone(started).isEmpty, "left running: \(started)")
    }

    @Test func onlyTheMinimalEnvironmentAndEnvPass() async throws {
        setenv("SPILLWAY_EXEC_TEST_SECRET", "must-not-pass", 1)
        let r = await run(input(["/usr/bin/env"], configure: { $0.command.env = [Tag("PROBE_MODE", "fast"), Tag("TZ", "UTC")] }))
        // env's output is not line protocol: every variable is a bad line, quoted in the report.
        let vars = Set(r.report.skipped.compactMap { e -> String? in
            guard let q = e.message.range(of: "line dropped: \"") else { return nil }
            return String(e.message[q.upperBound...].dropLast())
        })
        let names = Set(vars.compactMap { $0.split(separator: "=", maxSplits: 1).first.map(String.init) })
        #expect(vars.contains("PROBE_MODE=fast") && vars.contains("TZ=UTC"), "\(vars)")
        #expect(names.isSubset(of: Set(ExecCommand.passThrough + ["PROBE_MODE"])), "\(names)")
        #expect(names.contains("PATH"))
        #expect(!vars.contains { $0.contains("must-not-pass") })
    }

    @Test func stdinIsEmptyAndNoDescriptorOfTheAgentIsInherited() async throws {
        let held = open("/dev/zero", O_RDONLY)  // without O_CLOEXEC
        defer { close(held) }
        #expect(held > 2)
        let r = await run(sh(#"for f in /proc/self/fd/*; do echo "fd n=${f##*/}i"; done; read -r line; echo "stdin eof=$?i""#))
        #expect(r.error == nil && r.report.skipped.isEmpty)
        let fds = Set(r.records.filter { $0.name == "fd" }.compactMap { if case .int(let n) = $0.field("n") { n } else { nil } })
        // 0, 1, 2, and the directory the shell's glob is reading.
        #expect(fds.isSubset(of: [0, 1, 2, 3]) && fds.isSuperset(of: [0, 1, 2]), "\(fds)")
        #expect(!fds.contains(Int64(held)) || held == 3)
        #expect(r.records.last?.field("eof") == .int(1))
    }

    @Test func hugeOutputIsBoundedAndFailsTheRun() async throws {
        let r = await run(sh("yes 'm v=1' | head -c 50000000; sleep 30") { o in
            o.maxOutput = 1 << 20
            o.timeout = 20_000_000_000
        })
        let text = try #require(r.error?.description)
        #expect(text.contains("printed more than 1048576 bytes") && text.contains("nothing kept"), "\(text)")
        #expect(r.records.isEmpty)
        #expect(r.seconds < 10, "\(r.seconds)")
    }

    @Test func stderrIsBounded() async throws {
        var records: [Record] = []
        var report = InputReport()
        let note = try await sh("head -c 10000 /dev/zero | tr '\\0' e >&2; echo 'm v=1'") { $0.maxStderr = 100 }
            .collect(now: 1, stop: ExecStop(), into: &records, report: &report)
        #expect(records.count == 1)
        #expect(note.stderr == String(repeating: "e", count: 100) && note.stderrDropped == 9900)
    }

    @Test func aStopEndsARunningCommand() async throws {
        let stop = ExecStop()
        let input = sh("sleep 30") { $0.timeout = 20_000_000_000 }
        let start = Date()
        Task {
            try? await Task.sleep(for: .milliseconds(300))
            stop.stop()
        }
        var records: [Record] = []
        var report = InputReport()
        do throws(InputError) {
            _ = try await input.collect(now: 1, stop: stop, into: &records, report: &report)
            Issue.record("a stopped run is not a success")
        } catch {
            #expect(error.description.contains("stopped"))
        }
        #expect(Date().timeIntervalSince(start) < 5)
    }

    @Test func spillwayOnceGathersSynchronously() throws {
        var input = sh("echo 'm v=1'")
        var records: [Record] = []
        var report = InputReport()
        try input.gather(into: &records, report: &report, context: InputContext(procRoot: "/proc", sysRoot: "/sys", now: 77))
        #expect(records == [Record(name: "m", fields: [Field("v", .double(1))], timestamp: 77)])
    }
}

@Suite struct ExecdProcessRuns {
    final class Seen: @unchecked Sendable {
        let lock = NSLock()
        var lines: [String] = []
        var long: [Int] = []
        var stderr: [String] = []
        var cut: [Int] = []
        var pid: Int32 = 0
        func add(_ f: (Seen) -> Void) { lock.lock(); f(self); lock.unlock() }
        var snapshot: ([String], [Int], [String], Int32) { lock.lock(); defer { lock.unlock() }; return (lines, long, stderr, pid) }
    }

    func events(_ seen: Seen) -> DaemonEvents {
        DaemonEvents(line: { l, _ in seen.add { $0.lines.append(String(decoding: l, as: UTF8.self)) } },
                     longLine: { n in seen.add { $0.long.append(n) } },
                     cutLine: { n in seen.add { $0.cut.append(n) } },
                     stderr: { s in seen.add { $0.stderr.append(s) } })
    }

    @Test func linesArriveLongOnesAreDroppedAndStderrIsCut() async throws {
        let seen = Seen()
        let script = "echo a; head -c 300 /dev/zero | tr '\\0' x; echo; echo b; head -c 50 /dev/zero | tr '\\0' e >&2; echo >&2; printf c"
        let end = try await ExecProcess.runDaemon(ExecCommand(argv: ["/bin/sh", "-c", script]), maxLine: 100, maxStderrLine: 20,
                                                  killGrace: 1_000_000_000, stop: ExecStop(), started: { p in seen.add { $0.pid = p } },
                                                  events: events(seen))
        let (lines, long, stderr, pid) = seen.snapshot
        #expect(end == .exited(0) && pid > 0)
        // "c" has no newline when the output ends: maybe cut short, so dropped and reported.
        #expect(lines == ["a", "b"])
        #expect(seen.lock.withLock { seen.cut } == [4])
        #expect(long == [2])
        #expect(stderr == [String(repeating: "e", count: 20)])
    }

    @Test func stopTerminatesTheGroupThenKills() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-execd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("pids").path
        let seen = Seen()
        let stop = ExecStop()
        // Ignores SIGTERM: only SIGKILL after the grace period ends it and its child.
        let script = "trap '' TERM; echo $$ > \(file); sleep 30 & echo $! >> \(file); while :; do echo tick; sleep 0.1; done"
        let start = Date()
        Task {
            let deadline = Date().addingTimeInterval(5)
            while seen.snapshot.0.count < 2, Date() < deadline { try? await Task.sleep(for: .milliseconds(20)) }
            stop.stop()
        }
        let end = try await ExecProcess.runDaemon(ExecCommand(argv: ["/bin/sh", "-c", script]), maxLine: 100, maxStderrLine: 100,
                                                  killGrace: 300_000_000, stop: stop, started: { _ in }, events: events(seen))
        #expect(end == .signaled(SIGKILL))
        #expect(Date().timeIntervalSince(start) < 8)
        let pids = ((try? String(contentsOfFile: file, encoding: .utf8)) ?? "").split(separator: "\n").compactMap { Int32($0) }
        #expect(pids.count == 2)
        #expect(waitGone(pids).isEmpty)
    }
}

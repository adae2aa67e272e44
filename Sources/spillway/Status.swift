import ArgumentParser
import Foundation
import SpillwayAgent
import SpillwayConfig
import SpillwayCore
import Spool

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the breaker's state and the buffered backlog.",
        discussion: """
            Works whether or not the agent runs: it reads data_dir/buffer.sqlite read-only and never \
            blocks the agent. --json prints one JSON document (schema in docs/guarantees.md). --check follows \
            the monitoring-plugin convention: one line saying why, exit 0 OK; 1 WARNING (the breaker \
            open, the backlog above [status] warn_records, batches that could not be decoded set \
            aside); 2 CRITICAL (the agent not running, Redis refusing authentication, records \
            rejected or dropped in this run, the breaker open longer than [status] critical_open); \
            3 UNKNOWN (the configuration or the state cannot be read).
            """
    )

    @OptionGroup var options: ConfigOptions

    @Flag(help: "Print one JSON document.")
    var json = false

    @Flag(help: "Monitoring-plugin output and exit code.")
    var check = false

    @Option(name: .customLong("data-dir"), help: ArgumentHelp(
        "Read this data_dir instead of the configuration's; the configuration is then optional (its [status] thresholds are used when it loads, else the defaults).",
        valueName: "dir"))
    var dataDir: String?

    /// Nothing can be told of the agent: UNKNOWN (3) with --check, else exit 1, saying why.
    func cannotRead(_ what: String) -> ExitCode {
        if check {
            print("SPILLWAY UNKNOWN - cannot read \(what)")
            return ExitCode(3)
        }
        FileHandle.standardError.write(Data("spillway: cannot read \(what)\n".utf8))
        return ExitCode(1)
    }

    func run() async throws {
        var config: Config
        do {
            config = try options.loadOrThrow()
        } catch {
            // The agent runs on the configuration it read at its start (or last reload): with
            // --data-dir, a configuration edited since (and broken) does not hide its state.
            if let dataDir {
                config = Config(agent: AgentConfig(hostname: ""), inputs: [], redis: RedisOutputConfig(), files: [], warnings: [])
                config.agent.dataDir = ConfigPaths.resolve(dataDir, against: FileManager.default.currentDirectoryPath)
            } else if check {
                let first = error.diagnostics.first.map { "\($0)" } ?? "\(error)"
                let others = error.diagnostics.count - 1
                let more = others > 0 ? " (and \(others) more problem\(others == 1 ? "" : "s"); --data-dir reads the agent's state without it)" : " (--data-dir reads the agent's state without it)"
                print("SPILLWAY UNKNOWN - cannot read the configuration: \(first)\(more)")
                throw ExitCode(3)
            } else {
                FileHandle.standardError.write(Data("spillway: \(error.description)\n".utf8))
                throw ExitCode(2)
            }
        }
        if let dataDir { config.agent.dataDir = ConfigPaths.resolve(dataDir, against: FileManager.default.currentDirectoryPath) }
        let dir = DataDirectory.resolve(explicit: config.agent.dataDir, environment: ProcessInfo.processInfo.environment, forReading: true)
        // A data_dir (or buffer) this user may not read tells nothing: neither "no agent" nor "no
        // backlog" (the agent creates data_dir 0700 and its files 0600).
        for (path, mode) in [(dir, R_OK | X_OK), (dir + "/buffer.sqlite", R_OK), (dir + "/lock", R_OK)] {
            var st = stat()
            guard stat(path, &st) == 0, access(path, mode) != 0 else { continue }
            throw cannotRead("\(path): \(String(cString: strerror(errno))) (run status as the agent's user, or as root)")
        }
        // Whether an agent runs comes from its lock on the data_dir, never from the state's age.
        let holder = DataDirectoryLock.holder(of: dir)
        let status: SpoolStatus?
        do {
            status = try SpoolStatus.read(directory: dir)
        } catch {
            throw cannotRead("\(dir)/buffer.sqlite: \(error)")
        }
        let report = StatusReport(dataDir: dir, status: status, now: wallClockNanoseconds(), config: config.survive,
                                  agentRunning: holder.held, holderPID: holder.pid)
        if check {
            let (code, line) = report.check()
            print(line)
            if code != 0 { throw ExitCode(code) }
        } else if json {
            let data = try JSONSerialization.data(withJSONObject: report.document(), options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            FileHandle.standardOutput.write(data + Data("\n".utf8))
        } else {
            print(report.text(), terminator: "")
        }
    }
}

/// The status of one data_dir, in the three forms `status` prints.
struct StatusReport {
    let dataDir: String
    let status: SpoolStatus?
    let now: Int64
    let config: SurviveConfig
    /// Whether a `run` holds the data_dir's lock now, and its pid.
    let agentRunning: Bool
    var holderPID: Int32? = nil

    /// The agent's saved state (this version's JSON, or an earlier version's rows: `AgentState(rows:)`).
    var state: AgentState { status?.state ?? AgentState() }
    func seconds(since ns: Int64) -> Double { Double(now - ns) / 1e9 }

    var breakerState: String { state.breaker.state.rawValue }
    var breakerSince: Int64? { state.breaker.sinceNs }
    var updated: Int64? { state.updatedNs }
    var lastErrorAt: Int64? { state.lastError?.atNs }
    /// When the failures the last error belongs to began (the outage's first failure).
    var lastErrorFirstAt: Int64? { state.lastError?.firstFailureNs }
    var lastSuccessAt: Int64? { state.lastSuccessNs }
    /// The pid of the running agent, else of the last run.
    var pid: Int? { agentRunning ? holderPID.map(Int.init) ?? state.pid.map(Int.init) : state.pid.map(Int.init) }
    /// Whether the last error was left by an earlier run than the latest (or running) one.
    var lastErrorFromEarlierRun: Bool {
        guard let error = state.lastError else { return false }
        if let run = error.run, let id = state.run?.id { return run != id }
        // An error saved before runs were named: earlier when it predates the latest run's start.
        if let at = error.atNs, let started = state.run?.startedNs { return at < started }
        return false
    }
    /// Whether a write succeeded after the last error.
    var lastErrorResolved: Bool {
        guard let at = lastErrorAt, let ok = lastSuccessAt else { return false }
        return ok > at
    }
    /// The running agent's latest failure is a refused authentication (NOAUTH, WRONGPASS, NOPERM):
    /// the writer saves the last error's kind `auth` for it.
    var authenticationRefused: Bool {
        agentRunning && state.lastError?.kind == .auth && !lastErrorFromEarlierRun && !lastErrorResolved
    }
    /// Records/s while the running agent drains the backlog; 0 when no agent runs (a dead agent's
    /// last rate is not a drain going on).
    var replayRate: Double { agentRunning ? state.replayRate : 0 }
    var backlogRecords: Int64 { status?.totals.records ?? 0 }
    var eta: Double? { replayRate > 0 && backlogRecords > 0 ? Double(backlogRecords) / replayRate : nil }
    var droppedTotal: Int64 { state.counters.dropped }

    /// A tailed file as status shows it: its committed offset, and its size now when the file is
    /// still at its path (else the size when last read).
    struct TailedFile {
        var path: String
        var offset: Int64
        var size: Int64
        var present: Bool
        var updatedNs: Int64
        var lag: Int64 { max(0, size - offset) }
    }

    var tailedFiles: [TailedFile] {
        (status?.offsets ?? []).map { o in
            let c = o.checkpoint
            var st = stat()
            let here = stat(c.path, &st) == 0 && UInt64(st.st_dev) == c.identity.device && UInt64(st.st_ino) == c.identity.inode
            return TailedFile(path: c.path, offset: c.offset, size: here ? Int64(st.st_size) : c.size, present: here, updatedNs: o.updatedNs)
        }
    }

    /// Per input instance, as the agent last saved them: its last collection, duration, errors and
    /// records (empty before an agent with this state ran).
    var inputs: [InputFigures] { state.inputs }

    /// The counters by the names status shows, in its order.
    var counters: KeyValuePairs<String, Int64> {
        let c = state.counters
        return ["collected": c.collected, "backlog_at_start": c.backlogAtStart, "written": c.written, "replayed": c.replayed,
                "duplicates": c.duplicates, "rejected": c.rejected, "dropped": c.dropped, "spilled": c.spilled, "input_errors": c.inputErrors]
    }

    static func iso(_ ns: Int64) -> String {
        let f = ISO8601DateFormatter()
        return f.string(from: Date(timeIntervalSince1970: Double(ns) / 1e9))
    }

    func document() -> [String: Any] {
        let t = status?.totals
        var breaker: [String: Any] = ["state": breakerState, "consecutive_failures": state.breaker.consecutiveFailures]
        if let since = breakerSince {
            breaker["since"] = Self.iso(since)
            breaker["since_seconds"] = seconds(since: since)
        }
        var backlog: [String: Any] = [
            "records": t?.records ?? 0, "bytes": t?.bytes ?? 0, "batches": t?.batches ?? 0,
            "replay_rate": replayRate,
            "oldest_age_seconds": t?.oldestSpilledNs.map { seconds(since: $0) } ?? NSNull(),
            "newest_age_seconds": t?.newestSpilledNs.map { seconds(since: $0) } ?? NSNull(),
        ]
        backlog["eta_seconds"] = eta ?? NSNull()
        var counters: [String: Any] = [:]
        for (name, value) in self.counters { counters[name] = value }
        var agent: [String: Any] = ["running": agentRunning]
        if let updated {
            agent["updated_at"] = Self.iso(updated)
            agent["updated_age_seconds"] = seconds(since: updated)
        }
        if let pid { agent["pid"] = pid }
        if let started = state.run?.startedNs { agent["run_started_at"] = Self.iso(started) }
        var lastError: Any = NSNull()
        if let e = state.lastError {
            lastError = [
                "message": e.message, "at": lastErrorAt.map(Self.iso) ?? NSNull(),
                "first_failure_at": lastErrorFirstAt.map(Self.iso) ?? NSNull(),
                "from_earlier_run": lastErrorFromEarlierRun, "resolved": lastErrorResolved,
                "kind": e.kind?.rawValue ?? NSNull(),
            ] as [String: Any]
        }
        return [
            "data_dir": dataDir,
            "agent": agent,
            "breaker": breaker,
            "last_error": lastError,
            "last_success_at": lastSuccessAt.map(Self.iso) ?? NSNull(),
            "backlog": backlog,
            "top_keys": (status?.topKeys ?? []).map { ["key": $0.key, "records": $0.records] as [String: Any] },
            "dropped": [
                "total": droppedTotal,
                "keys": (status?.dropped ?? []).map { ["key": $0.key, "records": $0.records] as [String: Any] },
            ] as [String: Any],
            "rejected": [
                "total": state.counters.rejected,
                "keys": (status?.rejected ?? []).map {
                    ["key": $0.key, "records": $0.records, "reply": $0.reply, "at": Self.iso($0.updatedNs)] as [String: Any]
                },
            ] as [String: Any],
            "counters": counters,
            "backlog_lines": t?.lines ?? 0,
            "unreadable": ["batches": status?.unreadable.batches ?? 0, "records": status?.unreadable.records ?? 0] as [String: Any],
            "inputs": inputs.map { i in
                [
                    "input": i.input, "at": i.at,
                    "last_gather_at": i.lastGatherNs.map(Self.iso) ?? NSNull(),
                    "last_gather_age_seconds": i.lastGatherNs.map { seconds(since: $0) } ?? NSNull(),
                    "duration_seconds": Double(i.durationNs) / 1e9, "errors": i.errors, "records": i.records,
                ] as [String: Any]
            },
            "files": tailedFiles.map { f in
                ["path": f.path, "offset": f.offset, "size": f.size, "lag_bytes": f.lag, "present": f.present,
                 "committed_at": Self.iso(f.updatedNs)] as [String: Any]
            },
        ]
    }

    /// The monitoring-plugin answer: the worst state, and one line naming every reason (critical
    /// ones first), then the breaker and the backlog, then performance data after `|`.
    func check() -> (Int32, String) {
        var critical: [String] = []
        var warning: [String] = []
        if !agentRunning {
            let why = FileManager.default.fileExists(atPath: dataDir) ? "no spillway run holds \(dataDir)/lock" : "data_dir \(dataDir) does not exist"
            critical.append("agent not running (\(why))")
        }
        if authenticationRefused {
            critical.append("Redis refuses authentication: \(state.lastError?.message ?? "")")
        }
        let rejected = state.counters.rejected
        if rejected > 0 { critical.append("\(rejected) records rejected by Redis in this run") }
        if droppedTotal > 0 { critical.append("\(droppedTotal) records dropped in this run") }
        if breakerState != "closed", let since = breakerSince {
            // Half-open is the same outage, probing: since it began.
            let open = "breaker open for \(Units.formatDuration((now - since) / 1_000_000_000 * 1_000_000_000))"
                + (breakerState == "half_open" ? " (probing)" : "")
            if now - since > config.criticalOpen {
                critical.append("\(open) (> \(Units.formatDuration(config.criticalOpen)))")
            } else {
                warning.append(open)
            }
        }
        if backlogRecords > config.warnRecords {
            warning.append("backlog \(backlogRecords) records (> \(config.warnRecords))")
        }
        if let u = status?.unreadable, u.batches > 0 {
            warning.append("\(u.batches) unreadable batches (\(u.records) records) set aside in the buffer's unreadable_batches table")
        }
        let perf = " | backlog=\(backlogRecords);\(config.warnRecords);;0 rejected=\(rejected);;0;0 dropped=\(droppedTotal);;0;0"
        let (code, word): (Int32, String) = !critical.isEmpty ? (2, "CRITICAL") : !warning.isEmpty ? (1, "WARNING") : (0, "OK")
        let reasons = (critical + warning).joined(separator: "; ")
        // The breaker's state once: a reason that says how long it has been open says it already.
        let summary = (reasons.contains("breaker open for") ? "" : "breaker \(breakerState), ") + "backlog \(backlogRecords) records"
        return (code, "SPILLWAY \(word) - " + (reasons.isEmpty ? summary : "\(reasons); \(summary)") + perf)
    }

    func text() -> String {
        var out = "data_dir   \(dataDir)\n"
        guard let status else {
            return out + "no spill buffer yet: the agent has not run with this data_dir\nbreaker    closed\nbacklog    0 records\n"
        }
        out += "agent      \(agentRunning ? "running (pid \(pid.map { "\($0)" } ?? "?"))" : "not running")"
        if let updated { out += ", state saved \(String(format: "%.0f", seconds(since: updated))) s ago" }
        out += "\nbreaker    \(breakerState)"
        if let since = breakerSince { out += " since \(Self.iso(since)) (\(String(format: "%.0f", seconds(since: since))) s)" }
        out += ", \(state.breaker.consecutiveFailures) consecutive failures\n"
        if let e = state.lastError?.message {
            out += "last error \(e)"
            if let at = lastErrorAt {
                out += " (at \(Self.iso(at)), \(String(format: "%.0f", seconds(since: at))) s ago"
                if let first = lastErrorFirstAt, first < at { out += "; failing since \(Self.iso(first))" }
                out += ")"
            }
            if lastErrorFromEarlierRun { out += " [from an earlier run]" } else if lastErrorResolved { out += " [resolved: writes succeeded since]" }
            out += "\n"
        }
        let t = status.totals
        out += "backlog    \(t.records) records, \(t.bytes) bytes in \(t.batches) batches"
        if let o = t.oldestSpilledNs, let n = t.newestSpilledNs {
            out += "; oldest \(String(format: "%.0f", seconds(since: o))) s, newest \(String(format: "%.0f", seconds(since: n))) s old"
        }
        out += "\n"
        if let eta { out += "replaying  \(String(format: "%.0f", replayRate)) records/s, ETA \(String(format: "%.0f", eta)) s\n" }
        if !status.topKeys.isEmpty {
            out += "top keys\n"
            for k in status.topKeys { out += "  \(k.records)\t\(k.key)\n" }
        }
        out += "dropped    \(droppedTotal) this run"
        if !status.dropped.isEmpty {
            out += "; ever, per key:\n"
            for k in status.dropped.prefix(20) { out += "  \(k.records)\t\(k.key)\n" }
        } else {
            out += "\n"
        }
        if !status.rejected.isEmpty {
            out += "rejected   \(state.counters.rejected) this run; refused for good by Redis, ever, per key (last reply):\n"
            for k in status.rejected.prefix(20) { out += "  \(k.records)\t\(k.key)\t\(k.reply)\n" }
        }
        if status.unreadable.batches > 0 {
            out += "unreadable \(status.unreadable.batches) batches (\(status.unreadable.records) records) could not be decoded; set aside in table unreadable_batches of \(dataDir)/buffer.sqlite\n"
        }
        out += "counters   " + counters.map { "\($0.key)=\($0.value)" }.joined(separator: " ") + "\n"
        let inputs = self.inputs
        if !inputs.isEmpty {
            out += "inputs (last gather, duration, errors, records)\n"
            for i in inputs {
                let last = i.lastGatherNs.map { "\(Self.iso($0)) (\(String(format: "%.0f", seconds(since: $0))) s ago)" } ?? "never"
                out += "  \(i.input)\t\(i.at)\tlast \(last)\tduration \(String(format: "%.3f", Double(i.durationNs) / 1e6)) ms\terrors \(i.errors)\trecords \(i.records)\n"
            }
        }
        let files = tailedFiles
        if !files.isEmpty {
            out += "tailed files (offset committed, size, lag in bytes)\n"
            for f in files {
                out += "  \(f.path)\toffset \(f.offset)\tsize \(f.size)\tlag \(f.lag)\(f.present ? "" : "\t(rotated away or gone)")\n"
            }
        }
        return out
    }
}

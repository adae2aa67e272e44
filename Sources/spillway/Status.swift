import ArgumentParser
import Foundation
import SpillwayConfig
import SpillwayCore
import Spool

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the breaker's state and the buffered backlog.",
        discussion: """
            Works whether or not the agent runs: it reads data_dir/buffer.sqlite read-only and never \
            blocks the agent. --json prints one JSON document (schema in the README). --check follows \
            the monitoring-plugin convention: one line, exit 0 OK, 1 WARNING (backlog above \
            [status] warn_records, or batches that could not be decoded were set aside), 2 CRITICAL \
            (breaker open longer than [status] critical_open, or \
            records dropped), 3 UNKNOWN (the buffer cannot be read).
            """
    )

    @OptionGroup var options: ConfigOptions

    @Flag(help: "Print one JSON document.")
    var json = false

    @Flag(help: "Monitoring-plugin output and exit code.")
    var check = false

    func run() async throws {
        let config = try options.load()
        let dir = DataDirectory.resolve(explicit: config.agent.dataDir, environment: ProcessInfo.processInfo.environment)
        let status: SpoolStatus?
        do {
            status = try SpoolStatus.read(directory: dir)
        } catch {
            if check {
                print("SPILLWAY UNKNOWN - cannot read \(dir)/buffer.sqlite: \(error)")
                throw ExitCode(3)
            }
            FileHandle.standardError.write(Data("spillway: cannot read \(dir)/buffer.sqlite: \(error)\n".utf8))
            throw ExitCode(1)
        }
        let report = StatusReport(dataDir: dir, status: status, now: wallClockNanoseconds(), config: config.survive)
        if check {
            let (code, line) = report.check()
            print(line)
            if code != 0 { throw ExitCode(code) }
        } else if json {
            let data = try JSONSerialization.data(withJSONObject: report.document(), options: [.prettyPrinted, .sortedKeys])
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

    var state: [String: String] { status?.state ?? [:] }
    func int(_ k: String) -> Int64 { Int64(state[k] ?? "") ?? 0 }
    func seconds(since ns: Int64) -> Double { Double(now - ns) / 1e9 }

    var breakerState: String { state["breaker.state"] ?? "closed" }
    var breakerSince: Int64? { state["breaker.since_ns"].flatMap { Int64($0) } }
    var updated: Int64? { state["updated_ns"].flatMap { Int64($0) } }
    var lastErrorAt: Int64? { state["last_error_ns"].flatMap { Int64($0) } }
    /// The agent saves its state at least every 5 s: older than 15 s means it is not running.
    var agentRunning: Bool {
        guard let updated, let pid = state["pid"].flatMap({ Int32($0) }) else { return false }
        return seconds(since: updated) < 15 && kill(pid, 0) == 0
    }
    var replayRate: Double { Double(state["replay.rate"] ?? "") ?? 0 }
    var backlogRecords: Int64 { status?.totals.records ?? 0 }
    var eta: Double? { replayRate > 0 && backlogRecords > 0 ? Double(backlogRecords) / replayRate : nil }
    var droppedTotal: Int64 { int("counters.dropped") }

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

    static let counterNames = ["collected", "written", "spilled", "replayed", "dropped", "duplicates", "rejected", "input_errors"]

    static func iso(_ ns: Int64) -> String {
        let f = ISO8601DateFormatter()
        return f.string(from: Date(timeIntervalSince1970: Double(ns) / 1e9))
    }

    func document() -> [String: Any] {
        let t = status?.totals
        var breaker: [String: Any] = ["state": breakerState, "consecutive_failures": int("breaker.consecutive_failures")]
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
        for name in Self.counterNames { counters[name] = int("counters.\(name)") }
        var agent: [String: Any] = ["running": agentRunning]
        if let updated {
            agent["updated_at"] = Self.iso(updated)
            agent["updated_age_seconds"] = seconds(since: updated)
        }
        if let pid = state["pid"].flatMap({ Int($0) }) { agent["pid"] = pid }
        var lastError: Any = NSNull()
        if let m = state["last_error"] {
            lastError = ["message": m, "at": lastErrorAt.map(Self.iso) ?? NSNull()] as [String: Any]
        }
        return [
            "data_dir": dataDir,
            "agent": agent,
            "breaker": breaker,
            "last_error": lastError,
            "last_success_at": state["last_success_ns"].flatMap { Int64($0) }.map(Self.iso) ?? NSNull(),
            "backlog": backlog,
            "top_keys": (status?.topKeys ?? []).map { ["key": $0.key, "records": $0.records] as [String: Any] },
            "dropped": [
                "total": droppedTotal,
                "keys": (status?.dropped ?? []).map { ["key": $0.key, "records": $0.records] as [String: Any] },
            ] as [String: Any],
            "counters": counters,
            "backlog_lines": t?.lines ?? 0,
            "unreadable": ["batches": status?.unreadable.batches ?? 0, "records": status?.unreadable.records ?? 0] as [String: Any],
            "files": tailedFiles.map { f in
                ["path": f.path, "offset": f.offset, "size": f.size, "lag_bytes": f.lag, "present": f.present,
                 "committed_at": Self.iso(f.updatedNs)] as [String: Any]
            },
        ]
    }

    func check() -> (Int32, String) {
        let summary = "breaker \(breakerState), backlog \(backlogRecords) records"
        if breakerState == "open", let since = breakerSince, Double(now - since) > Double(config.criticalOpen) {
            return (2, "SPILLWAY CRITICAL - breaker open for \(Units.formatDuration((now - since) / 1_000_000_000 * 1_000_000_000)) (> \(Units.formatDuration(config.criticalOpen))), backlog \(backlogRecords) records")
        }
        if droppedTotal > 0 {
            return (2, "SPILLWAY CRITICAL - \(droppedTotal) records dropped, \(summary)")
        }
        if let u = status?.unreadable, u.batches > 0 {
            return (1, "SPILLWAY WARNING - \(u.batches) unreadable batches (\(u.records) records) set aside in the buffer's unreadable_batches table, \(summary)")
        }
        if backlogRecords > config.warnRecords {
            return (1, "SPILLWAY WARNING - backlog \(backlogRecords) records (> \(config.warnRecords)), breaker \(breakerState)")
        }
        return (0, "SPILLWAY OK - \(summary)")
    }

    func text() -> String {
        var out = "data_dir   \(dataDir)\n"
        guard let status else {
            return out + "no spill buffer yet: the agent has not run with this data_dir\nbreaker    closed\nbacklog    0 records\n"
        }
        out += "agent      \(agentRunning ? "running (pid \(state["pid"] ?? "?"))" : "not running")"
        if let updated { out += ", state saved \(String(format: "%.0f", seconds(since: updated))) s ago" }
        out += "\nbreaker    \(breakerState)"
        if let since = breakerSince { out += " since \(Self.iso(since)) (\(String(format: "%.0f", seconds(since: since))) s)" }
        out += ", \(int("breaker.consecutive_failures")) consecutive failures\n"
        if let e = state["last_error"] {
            out += "last error \(e)"
            if let at = lastErrorAt {
                out += " (at \(Self.iso(at)), \(String(format: "%.0f", seconds(since: at))) s ago)"
            }
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
        if status.unreadable.batches > 0 {
            out += "unreadable \(status.unreadable.batches) batches (\(status.unreadable.records) records) could not be decoded; set aside in table unreadable_batches of \(dataDir)/buffer.sqlite\n"
        }
        out += "counters   " + Self.counterNames.map { "\($0)=\(int("counters.\($0)"))" }.joined(separator: " ") + "\n"
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

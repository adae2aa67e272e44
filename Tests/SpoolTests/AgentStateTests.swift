import Foundation
import SpillwayCore
import Spool
import Testing

/// The key/value rows the previous version saved in `agent_state` (every key it wrote).
let legacyRows: [String: String] = [
    "breaker.state": "open", "breaker.since_ns": "1750000000000000000", "breaker.consecutive_failures": "4",
    "counters.written": "120", "counters.spilled": "30", "counters.replayed": "5", "counters.dropped": "2",
    "counters.duplicates": "1", "counters.rejected": "3", "counters.collected": "161", "counters.input_errors": "6",
    "counters.backlog_at_start": "10",
    "updated_ns": "1750000060000000000", "replay.rate": "12.5", "pid": "4242",
    "last_error": "OOM command not allowed when used memory > 'maxmemory'.", "last_error_kind": "transient",
    "last_error_ns": "1750000050000000000", "last_error.run": "4242-1749990000000000000",
    "last_error.first_ns": "1750000000000000000",
    "run.id": "4242-1749990000000000000", "run.started_ns": "1749990000000000000",
    "last_success_ns": "1749999990000000000",
    "inputs": #"[{"input":"cpu","at":"agent.toml:3","last_gather_ns":1750000059000000000,"duration_ns":1500000,"errors":0,"records":100}]"#,
]

/// `legacyRows`, typed.
var legacyState: AgentState {
    var s = AgentState()
    s.breaker = AgentState.Breaker(state: .open, sinceNs: 1_750_000_000_000_000_000, consecutiveFailures: 4)
    s.counters.written = 120
    s.counters.spilled = 30
    s.counters.replayed = 5
    s.counters.dropped = 2
    s.counters.duplicates = 1
    s.counters.rejected = 3
    s.counters.collected = 161
    s.counters.inputErrors = 6
    s.counters.backlogAtStart = 10
    s.updatedNs = 1_750_000_060_000_000_000
    s.replayRate = 12.5
    s.pid = 4242
    s.run = AgentState.Run(id: "4242-1749990000000000000", startedNs: 1_749_990_000_000_000_000)
    s.lastError = AgentState.LastError(message: "OOM command not allowed when used memory > 'maxmemory'.", kind: .transient,
                                       atNs: 1_750_000_050_000_000_000, firstFailureNs: 1_750_000_000_000_000_000,
                                       run: "4242-1749990000000000000")
    s.lastSuccessNs = 1_749_999_990_000_000_000
    var cpu = InputFigures(input: "cpu", at: "agent.toml:3")
    cpu.lastGatherNs = 1_750_000_059_000_000_000
    cpu.durationNs = 1_500_000
    cpu.records = 100
    s.inputs = [cpu]
    return s
}

/// Runs a Python program with sqlite3 on `path`; returns its stdout.
func python(_ path: String, _ program: String) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
    p.arguments = ["-c", "import sqlite3, sys\ndb = sqlite3.connect(sys.argv[1])\n" + program, path]
    let out = Pipe()
    p.standardOutput = out
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    #expect(p.terminationStatus == 0)
    return String(decoding: data, as: UTF8.self)
}

@Suite struct AgentStateStorage {
    /// The one place the previous version's rows are read: every key into its typed field.
    @Test func thePreviousVersionsRowsDecodeIntoTheTypedState() {
        #expect(AgentState(legacyRows: legacyRows) == legacyState)
        #expect(AgentState(rows: legacyRows) == legacyState)
        // A missing or unreadable value takes its default, as status read it before.
        var partial = AgentState(legacyRows: ["breaker.state": "half_open", "updated_ns": "soon", "counters.written": "7",
                                              "run.id": "1-2", "last_error_kind": "auth"])
        #expect(partial.breaker == AgentState.Breaker(state: .halfOpen) && partial.counters.written == 7)
        #expect(partial.updatedNs == nil && partial.run == nil && partial.lastError == nil && partial.inputs.isEmpty)
        partial.breaker.state = .closed
        partial.counters.written = 0
        #expect(partial == AgentState() && AgentState(rows: [:]) == AgentState())
    }

    /// Stored as JSON (snake_case keys), read back equal; a field another version did not save
    /// takes its default.
    @Test func theJSONRoundTripsAndMissingFieldsTakeDefaults() throws {
        let json = try legacyState.json()
        #expect(json.contains(#""breaker":{"consecutive_failures":4,"since_ns":1750000000000000000,"state":"open"}"#), "\(json)")
        #expect(json.contains(#""backlog_at_start":10"#) && json.contains(#""first_failure_ns":1750000000000000000"#), "\(json)")
        #expect(AgentState(rows: [AgentState.key: json]) == legacyState)
        let sparse = AgentState(rows: [AgentState.key: #"{"breaker":{"state":"half_open"},"counters":{"written":3},"last_error":{"message":"x"}}"#])
        var expected = AgentState()
        expected.breaker.state = .halfOpen
        expected.counters.written = 3
        expected.lastError = AgentState.LastError(message: "x")
        #expect(sparse == expected)
    }

    /// This version deletes the old rows when it saves: old rows beside the JSON were saved by an
    /// earlier version that ran after it (a downgrade), and the newer of the two is read.
    @Test func theNewerOfTheJSONAndOldRowsIsRead() throws {
        var saved = AgentState()
        saved.updatedNs = 1_750_000_000_000_000_000
        saved.counters.written = 1
        var rows = legacyRows
        rows[AgentState.key] = try saved.json()
        #expect(AgentState(rows: rows) == legacyState)
        saved.updatedNs = 1_760_000_000_000_000_000
        rows[AgentState.key] = try saved.json()
        #expect(AgentState(rows: rows) == saved)
    }

    /// A buffer the previous version wrote: its rows are read (by the agent and by status); the
    /// first save leaves one row, `state`, holding the JSON, and both read it back.
    @Test func aBufferThePreviousVersionWroteIsMigratedAtTheFirstSave() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let spool = try Spool(directory: dir)
        let values = legacyRows.map { "(\(pyString($0.key)), \(pyString($0.value)))" }.joined(separator: ", ")
        _ = try python(dir + "/buffer.sqlite", "db.executemany('INSERT INTO agent_state (key, value) VALUES (?, ?)', [\(values)]); db.commit()")
        #expect(try spool.readState() == legacyState)
        #expect(try #require(try SpoolStatus.read(directory: dir)).state == legacyState)

        var next = try spool.readState()
        next.counters.written += 10
        next.breaker = AgentState.Breaker(state: .closed, sinceNs: 1_750_000_100_000_000_000)
        next.lastError?.kind = .auth
        try spool.saveState(next)
        let rows = try python(dir + "/buffer.sqlite", "for k, v in db.execute('SELECT key, value FROM agent_state'): print(k, v)")
        #expect(rows.hasPrefix("state {") && rows.split(separator: "\n").count == 1, "\(rows)")
        #expect(try spool.readState() == next)
        #expect(try #require(try SpoolStatus.read(directory: dir)).state == next)
    }
}

/// `s` as a Python string literal.
func pyString(_ s: String) -> String {
    "'" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
}

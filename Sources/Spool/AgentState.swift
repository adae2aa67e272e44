import Foundation
import SpillwayCore

/// The agent's state as `spillway status` shows it: saved by the writer (its send stage, while it
/// runs, and the run's start), read by status. Stored as one JSON value under key `state` of the
/// buffer's `agent_state` table (`Spool.saveState`). A data_dir an earlier version wrote holds
/// key/value rows instead (`breaker.state`, `updated_ns`, …): `init(rows:)` reads either, and
/// `init(legacyRows:)` is the one place that decodes the old rows.
public struct AgentState: Codable, Sendable, Equatable {
    /// The `agent_state` key the JSON is stored under.
    public static let key = "state"

    public struct Breaker: Codable, Sendable, Equatable {
        public var state: CircuitBreaker.State = .closed
        /// Since when (wall clock, ns): open or half-open, since the outage began (its first
        /// opening, not the latest probe); closed, since it closed. Nil before a writer saved it.
        public var sinceNs: Int64?
        public var consecutiveFailures: Int64 = 0

        public init(state: CircuitBreaker.State = .closed, sinceNs: Int64? = nil, consecutiveFailures: Int64 = 0) {
            self.state = state
            self.sinceNs = sinceNs
            self.consecutiveFailures = consecutiveFailures
        }
    }

    /// This run's counters (status's `counters`): collected + backlog_at_start = written + replayed
    /// + duplicates + rejected + dropped + the backlog.
    public struct Counters: Codable, Sendable, Equatable {
        public var collected: Int64 = 0
        /// The backlog (and the records waiting for new IDs) when the run started.
        public var backlogAtStart: Int64 = 0
        public var written: Int64 = 0
        public var replayed: Int64 = 0
        public var duplicates: Int64 = 0
        public var rejected: Int64 = 0
        /// Dropped by the spill buffer or the queue, or lost without a buffer.
        public var dropped: Int64 = 0
        public var spilled: Int64 = 0
        public var inputErrors: Int64 = 0

        public init() {}
    }

    /// A run of the agent: its name (pid and start) and when it started (wall clock, ns).
    public struct Run: Codable, Sendable, Equatable {
        public var id: String
        public var startedNs: Int64

        public init(id: String, startedNs: Int64) {
            self.id = id
            self.startedNs = startedNs
        }
    }

    /// The last write that failed. It stays after the failures end, and across runs.
    public struct LastError: Codable, Sendable, Equatable {
        public enum Kind: String, Codable, Sendable {
            /// Redis refused the credentials or the ACL (status --check: CRITICAL).
            case auth
            case transient
        }

        public var message: String
        /// The saving run's latest failure's kind (saved with every save, for the run's error).
        public var kind: Kind?
        /// When it happened (wall clock, ns).
        public var atNs: Int64?
        /// When the failures it belongs to began (the outage's first failure).
        public var firstFailureNs: Int64?
        /// The run it happened in (`Run.id`).
        public var run: String?

        public init(message: String, kind: Kind? = nil, atNs: Int64? = nil, firstFailureNs: Int64? = nil, run: String? = nil) {
            self.message = message
            self.kind = kind
            self.atNs = atNs
            self.firstFailureNs = firstFailureNs
            self.run = run
        }
    }

    public var breaker = Breaker()
    public var counters = Counters()
    /// When the writer last saved it (wall clock, ns).
    public var updatedNs: Int64?
    /// The pid of the agent that saved it.
    public var pid: Int32?
    /// The latest run (it names itself at its start).
    public var run: Run?
    /// Replayed records per second, while a backlog is replayed (status's ETA), to 0.1.
    public var replayRate: Double = 0
    public var lastError: LastError?
    /// When a write last succeeded (wall clock, ns).
    public var lastSuccessNs: Int64?
    /// Per input instance: its last collection, duration, errors and records.
    public var inputs: [InputFigures] = []

    public init() {}

    // MARK: stored form

    enum CodingKeys: String, CodingKey {
        case breaker, counters, pid, run, inputs
        case updatedNs = "updated_ns"
        case replayRate = "replay_rate"
        case lastError = "last_error"
        case lastSuccessNs = "last_success_ns"
    }

    /// A field a saved state lacks (saved by another version) takes its default.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        breaker = try c.decodeIfPresent(Breaker.self, forKey: .breaker) ?? Breaker()
        counters = try c.decodeIfPresent(Counters.self, forKey: .counters) ?? Counters()
        updatedNs = try c.decodeIfPresent(Int64.self, forKey: .updatedNs)
        pid = try c.decodeIfPresent(Int32.self, forKey: .pid)
        run = try c.decodeIfPresent(Run.self, forKey: .run)
        replayRate = try c.decodeIfPresent(Double.self, forKey: .replayRate) ?? 0
        lastError = try c.decodeIfPresent(LastError.self, forKey: .lastError)
        lastSuccessNs = try c.decodeIfPresent(Int64.self, forKey: .lastSuccessNs)
        inputs = try c.decodeIfPresent([InputFigures].self, forKey: .inputs) ?? []
    }

    /// The JSON stored under `key` (keys sorted). Throws only for a replay rate that is not a number
    /// (JSON has none), which is saved as 0.
    public func json() throws -> String {
        var state = self
        if !state.replayRate.isFinite { state.replayRate = 0 }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(state), as: UTF8.self)
    }

    /// The state in `agent_state`'s rows: the JSON under `key`; else (a data_dir an earlier version
    /// wrote) the key/value rows. Both are there when an earlier version ran after this one (its
    /// rows are newer: this version deletes them when it saves): the newer is taken.
    public init(rows: [String: String]) {
        let legacy = AgentState(legacyRows: rows)
        guard let json = rows[Self.key], let saved = try? JSONDecoder().decode(AgentState.self, from: Data(json.utf8)) else {
            self = legacy
            return
        }
        if let old = legacy.updatedNs, old > saved.updatedNs ?? .min {
            self = legacy
        } else {
            self = saved
        }
    }

    /// Decodes the key/value rows earlier versions saved (values as text; one missing or unreadable
    /// takes its default, as status read them then).
    public init(legacyRows rows: [String: String]) {
        func int(_ key: String) -> Int64? { rows[key].flatMap { Int64($0) } }
        breaker = Breaker(state: rows["breaker.state"].flatMap { CircuitBreaker.State(rawValue: $0) } ?? .closed,
                          sinceNs: int("breaker.since_ns"), consecutiveFailures: int("breaker.consecutive_failures") ?? 0)
        counters.collected = int("counters.collected") ?? 0
        counters.backlogAtStart = int("counters.backlog_at_start") ?? 0
        counters.written = int("counters.written") ?? 0
        counters.replayed = int("counters.replayed") ?? 0
        counters.duplicates = int("counters.duplicates") ?? 0
        counters.rejected = int("counters.rejected") ?? 0
        counters.dropped = int("counters.dropped") ?? 0
        counters.spilled = int("counters.spilled") ?? 0
        counters.inputErrors = int("counters.input_errors") ?? 0
        updatedNs = int("updated_ns")
        pid = rows["pid"].flatMap { Int32($0) }
        if let id = rows["run.id"], let started = int("run.started_ns") { run = Run(id: id, startedNs: started) }
        replayRate = rows["replay.rate"].flatMap { Double($0) } ?? 0
        if let message = rows["last_error"] {
            lastError = LastError(message: message, kind: rows["last_error_kind"].flatMap { LastError.Kind(rawValue: $0) },
                                  atNs: int("last_error_ns"), firstFailureNs: int("last_error.first_ns"), run: rows["last_error.run"])
        }
        lastSuccessNs = int("last_success_ns")
        if let text = rows["inputs"] { inputs = (try? JSONDecoder().decode([InputFigures].self, from: Data(text.utf8))) ?? [] }
    }
}

extension AgentState.Breaker {
    enum CodingKeys: String, CodingKey {
        case state
        case sinceNs = "since_ns"
        case consecutiveFailures = "consecutive_failures"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        state = try c.decodeIfPresent(CircuitBreaker.State.self, forKey: .state) ?? .closed
        sinceNs = try c.decodeIfPresent(Int64.self, forKey: .sinceNs)
        consecutiveFailures = try c.decodeIfPresent(Int64.self, forKey: .consecutiveFailures) ?? 0
    }
}

extension AgentState.Counters {
    enum CodingKeys: String, CodingKey {
        case collected, written, replayed, duplicates, rejected, dropped, spilled
        case backlogAtStart = "backlog_at_start"
        case inputErrors = "input_errors"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        func n(_ k: CodingKeys) throws -> Int64 { try c.decodeIfPresent(Int64.self, forKey: k) ?? 0 }
        collected = try n(.collected)
        backlogAtStart = try n(.backlogAtStart)
        written = try n(.written)
        replayed = try n(.replayed)
        duplicates = try n(.duplicates)
        rejected = try n(.rejected)
        dropped = try n(.dropped)
        spilled = try n(.spilled)
        inputErrors = try n(.inputErrors)
    }
}

extension AgentState.LastError {
    enum CodingKeys: String, CodingKey {
        case message, kind, run
        case atNs = "at_ns"
        case firstFailureNs = "first_failure_ns"
    }
}

extension AgentState.Run {
    enum CodingKeys: String, CodingKey {
        case id
        case startedNs = "started_ns"
    }
}

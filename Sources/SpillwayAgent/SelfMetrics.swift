import Foundation
import SpillwayConfig
import SpillwayCore
import Synchronization

/// A tailed file's lag: bytes written to it that the agent has not read yet.
public struct TailLag: Sendable, Equatable {
    /// The tail instance's location.
    public var at: String
    public var path: String
    public var bytes: Int64

    public init(at: String, path: String, bytes: Int64) {
        self.at = at
        self.path = path
        self.bytes = bytes
    }
}

/// The per-input table `CollectorStats` keeps: the running configuration's instances, in order.
struct InputTable {
    var inputs: [InputFigures] = []
    var lags: [String: [TailLag]] = [:]
}

extension CollectorStats {
    /// A pipeline starts with these instances: figures of instances that stay carry over, removed
    /// ones are forgotten. An instance stays when its plugin and location are the same, or, when
    /// lines moved (a key added above it), when it is the same plugin's n-th instance as before and
    /// that one's location is gone; it then takes its new location.
    public func begin(instances: [InputInstance]) {
        table.withLock { t in
            let old = t.inputs
            let newLocations = Set(instances.map { "\($0.plugin)\u{0}\($0.location)" })
            var ordinal: [String: Int] = [:]
            t.inputs = instances.map { i in
                let n = ordinal[i.plugin, default: 0]
                ordinal[i.plugin] = n + 1
                if let same = old.first(where: { $0.input == i.plugin && $0.at == i.location }) { return same }
                let moved = old.filter { $0.input == i.plugin }.enumerated().first { k, f in
                    k == n && !newLocations.contains("\(f.input)\u{0}\(f.at)")
                }
                guard var figures = moved?.element else { return InputFigures(input: i.plugin, at: i.location) }
                figures.at = i.location
                return figures
            }
            let kept = Set(instances.map(\.location))
            t.lags = t.lags.filter { kept.contains($0.key) }
        }
    }

    /// One collection (or tail poll) of `instance` ended.
    public func gathered(instance: InputInstance, at startNs: Int64, duration: Int64, records: Int, errors: Int) {
        table.withLock { t in
            let i: Int
            if let found = t.inputs.firstIndex(where: { $0.input == instance.plugin && $0.at == instance.location }) {
                i = found
            } else {
                t.inputs.append(InputFigures(input: instance.plugin, at: instance.location))
                i = t.inputs.count - 1
            }
            t.inputs[i].lastGatherNs = startNs
            t.inputs[i].durationNs = duration
            t.inputs[i].records += Int64(records)
            t.inputs[i].errors += Int64(errors)
        }
    }

    /// The lags of the files a tail instance follows now (replacing the ones it reported before).
    public func setLags(at location: String, _ lags: [TailLag]) {
        table.withLock { $0.lags[location] = lags }
    }

    public var inputFigures: [InputFigures] { table.withLock { $0.inputs } }

    /// Every tailed file's lag, by instance then path.
    public var tailLags: [TailLag] {
        table.withLock { t in t.lags.keys.sorted().flatMap { t.lags[$0]!.sorted { $0.path < $1.path } } }
    }
}

/// The agent's own figures at one moment: what the internal input emits, `/metrics` exposes and
/// `/health` judges.
public struct AgentFigures: Sendable, Equatable {
    /// The counters as `status` shows them (collected, written, replayed, duplicates, rejected,
    /// dropped, spilled, input_errors), in that order.
    public var counters: [(name: String, value: Int64)] = []
    /// Records waiting in memory for the writer.
    public var queueLength: Int64 = 0
    public var backlogRecords: Int64 = 0
    public var backlogBytes: Int64 = 0
    /// `closed`, `half_open` or `open`.
    public var breakerState = "closed"
    /// The latest write error, if the breaker is not closed.
    public var lastError: String?
    public var inputs: [InputFigures] = []
    public var lags: [TailLag] = []

    public init() {}

    public static let counterNames = ["collected", "written", "replayed", "duplicates", "rejected", "dropped", "spilled", "input_errors"]

    public func counter(_ name: String) -> Int64 { counters.first { $0.name == name }?.value ?? 0 }

    /// The breaker as a number: 0 closed, 1 half-open (probing), 2 open.
    public var breakerNumber: Int64 {
        switch breakerState {
        case "closed": 0
        case "half_open": 1
        default: 2
        }
    }

    public static func == (a: AgentFigures, b: AgentFigures) -> Bool {
        a.counters.map(\.name) == b.counters.map(\.name) && a.counters.map(\.value) == b.counters.map(\.value)
            && a.queueLength == b.queueLength && a.backlogRecords == b.backlogRecords && a.backlogBytes == b.backlogBytes
            && a.breakerState == b.breakerState && a.lastError == b.lastError && a.inputs == b.inputs && a.lags == b.lags
    }

    /// The internal input's records at `now`: `spillway` (the counters, queue, backlog, breaker),
    /// one `spillway_input` per input instance (tags `input`, `at`) and one `spillway_tail` per
    /// tailed file (tags `at`, `path`).
    public func records(now: Int64) -> [Record] {
        var fields: [Field] = counters.map { Field($0.name, .int($0.value)) }
        fields += [
            Field("queue_length", .int(queueLength)),
            Field("backlog_records", .int(backlogRecords)),
            Field("backlog_bytes", .int(backlogBytes)),
            Field("breaker_state", .int(breakerNumber)),
        ]
        var out = [Record(name: "spillway", tags: [], fields: fields, timestamp: now)]
        for i in inputs {
            var f: [Field] = [
                Field("errors", .int(i.errors)),
                Field("records", .int(i.records)),
                Field("gather_seconds", .double(Double(i.durationNs) / 1e9)),
            ]
            if let last = i.lastGatherNs { f.append(Field("last_gather_ns", .int(last))) }
            out.append(Record(name: "spillway_input", tags: [Tag("at", i.at), Tag("input", i.input)], fields: f, timestamp: now))
        }
        for l in lags {
            out.append(Record(name: "spillway_tail", tags: [Tag("at", l.at), Tag("path", l.path)],
                              fields: [Field("lag_bytes", .int(l.bytes))], timestamp: now))
        }
        return out
    }

    /// `/health`: healthy while the breaker is closed (writing directly, or draining a backlog);
    /// otherwise not, with the reason.
    public var health: (healthy: Bool, reason: String) {
        if breakerState == "closed" {
            return backlogRecords > 0
                ? (true, "ok: breaker closed, draining a backlog of \(backlogRecords) records\n")
                : (true, "ok: breaker closed\n")
        }
        var reason = "unhealthy: breaker \(breakerState)" + (breakerState == "half_open" ? " (probing Redis)" : "")
        reason += ", backlog \(backlogRecords) records"
        if let e = lastError { reason += ", last error: \(e)" }
        return (false, reason + "\n")
    }
}

/// Where the agent's figures come from: the counters objects that carry across reloads, and the
/// queue of the pipeline running now.
public final class SelfMetrics: Sendable {
    public let writerStats: WriterStats
    public let collectorStats: CollectorStats
    private let queue = Mutex<RecordQueue?>(nil)

    public init(writerStats: WriterStats, collectorStats: CollectorStats) {
        self.writerStats = writerStats
        self.collectorStats = collectorStats
    }

    /// The queue of the pipeline that starts now.
    public func use(queue q: RecordQueue) { queue.withLock { $0 = q } }

    public func figures() -> AgentFigures {
        let s = writerStats.snapshot
        let q = queue.withLock { $0 }
        var f = AgentFigures()
        f.counters = [
            ("collected", q?.pushed ?? 0),
            ("written", s.counters.written),
            ("replayed", s.replayed),
            ("duplicates", s.counters.duplicates),
            ("rejected", s.counters.rejected),
            ("dropped", s.dropped + (q?.dropped ?? 0)),
            ("spilled", s.spilled),
            ("input_errors", collectorStats.errors),
        ]
        f.queueLength = Int64(q?.count ?? 0)
        f.backlogRecords = s.backlogRecords
        f.backlogBytes = s.backlogBytes
        f.breakerState = s.breakerState
        if s.breakerState != "closed" { f.lastError = s.lastError }
        f.inputs = collectorStats.inputFigures
        f.lags = collectorStats.tailLags
        return f
    }

    /// The internal input (`[agent] internal`, on by default), as an instance the collector runs
    /// every `[agent] interval` like any other.
    public func internalInstance(agent: AgentConfig) -> InputInstance {
        InputInstance(plugin: "internal", file: "[agent] internal", line: nil, interval: agent.interval,
                      input: InternalInput(source: self))
    }
}

/// Emits the agent's own records (see `AgentFigures.records`).
public struct InternalInput: Input {
    let source: SelfMetrics

    public func gather(into records: inout [Record], report: inout InputReport, context: InputContext) throws {
        records += source.figures().records(now: context.now)
    }
}

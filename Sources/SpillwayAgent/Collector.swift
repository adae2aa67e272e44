import Logging
import ServiceLifecycle
import SpillwayConfig
import SpillwayCore
import SpillwayInputs
import Synchronization

/// Counters the collector keeps, shared with whoever reports them. (Records collected are counted
/// where they enter the queue: `RecordQueue.pushed`.)
public final class CollectorStats: Sendable {
    private struct Counts {
        var errors: Int64 = 0
    }

    private let counts = Mutex(Counts())
    /// What the inputs' reports already said, once per instance, path and kind: kept across reloads,
    /// so a reload does not log every left-out part again. Bounded (1,024).
    private let said = Mutex(Set<String>())

    /// Whether `key` is new (and now remembered); false once 1,024 are remembered.
    func firstTime(_ key: String) -> Bool {
        said.withLock { s in s.count < 1024 && s.insert(key).inserted }
    }
    /// Per input instance: its last collection, errors and records; per tailed file, its lag.
    let table = Mutex(InputTable())

    public init() {}

    /// Failed collections, plus the parts of collections left out (a line, a file, a mount point),
    /// so far.
    public var errors: Int64 { counts.withLock { $0.errors } }

    func add(errors: Int) {
        counts.withLock { $0.errors += Int64(errors) }
    }
}

/// Runs every input on its own schedule until graceful shutdown: each instance collects at multiples
/// of its interval (aligned to the wall clock, as Telegraf's round_interval), delayed by a random
/// 0…jitter, stamps its records with that tick, and hands them to `sink`. A failing input is counted at
/// each collection and logged once until it works again (then one line with the count); it never stops
/// the others. A collection that overruns its interval skips the ticks it missed. `sink` gets the
/// index of the instance in `config.inputs` and its records.
public struct CollectorService: Service {
    let config: Config
    let logger: Logger
    let stats: CollectorStats
    let sink: @Sendable (Int, [Record]) async -> Void

    public init(config: Config, logger: Logger, stats: CollectorStats = CollectorStats(),
                sink: @escaping @Sendable (Int, [Record]) async -> Void) {
        self.config = config
        self.logger = logger
        self.stats = stats
        self.sink = sink
    }

    public func run() async throws {
        let agent = config.agent
        // A service that returns ends the whole group: with nothing scheduled, wait for shutdown.
        guard config.inputs.contains(where: { !($0.input is TailInput) }) else {
            try? await gracefulShutdown()
            return
        }
        await withTaskGroup(of: Void.self) { group in
            // Continuous inputs (tail) run in TailService.
            for (index, instance) in config.inputs.enumerated() where !(instance.input is TailInput) {
                group.addTask {
                    await Self.loop(instance: instance, agent: agent, logger: logger, stats: stats) { await sink(index, $0) }
                }
            }
            await group.waitForAll()
        }
    }

    static func loop(instance: InputInstance, agent: AgentConfig, logger: Logger, stats: CollectorStats,
                     sink: @Sendable ([Record]) async -> Void) async {
        var instance = instance
        let interval = instance.interval
        var records: [Record] = []
        var report = InputReport()
        var episodes = Episodes()
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            let now = wallClockNanoseconds()
            let next = (now / interval + 1) * interval
            let jitter = agent.jitter > 0 ? Int64.random(in: 0...agent.jitter) : 0
            // A stop ends the wait at once (not at the next tick, up to an interval later).
            let wait = next - now + jitter
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: .nanoseconds(wait)) }
            } catch {
                return
            }
            if Task.isShuttingDownGracefully { return }
            records.removeAll(keepingCapacity: true)
            report.removeAll()
            // Records carry the scheduled tick (a multiple of the interval), not the moment the read
            // happened: series line up across inputs and hosts.
            let started = wallClockNanoseconds()
            let clock = monotonicNanoseconds()
            let error = instance.collect(agent: agent, now: next, into: &records, report: &report)
            let duration = monotonicNanoseconds() - clock
            let who: Logger.Metadata = ["input.name": "\(instance.plugin)", "input.at": "\(instance.location)"]
            if let error {
                episodes.failed("input failed", error: "\(error)", logger: logger, metadata: who)
            } else if !episodes.open.isEmpty {
                var l = logger
                for (k, v) in who { l[metadataKey: k] = v }
                episodes.recovered("input failed", logger: l)
            }
            Self.log(report, of: instance, stats: stats, logger: logger)
            let errors = report.errors(failed: error != nil)
            if errors > 0 { stats.add(errors: errors) }
            stats.gathered(instance: instance, at: started, duration: duration, records: records.count, errors: errors)
            if !records.isEmpty { await sink(records) }
        }
    }

    /// Logs what a collection left out and what it had to say, once per file and kind for the
    /// instance's life (`said` remembers): the same malformed line every 10 s is one warning, then
    /// only `counters.input_errors` grows.
    static func log(_ report: InputReport, of instance: InputInstance, stats: CollectorStats, logger: Logger) {
        let who = "\(instance.plugin)\u{0}\(instance.location)\u{0}"
        for e in report.skipped where stats.firstTime("s\u{0}" + who + e.onceKey) {
            logger.warning("input left part of a collection out; the rest was collected", metadata: [
                "input.name": "\(instance.plugin)", "input.at": "\(instance.location)", "input.skipped": "\(e)",
                "input.note": "more of this kind (\(e.kind)) at this path are counted in counters.input_errors, not logged",
            ])
        }
        for e in report.notices where stats.firstTime("n\u{0}" + who + e.onceKey) {
            logger.notice("input", metadata: ["input.name": "\(instance.plugin)", "input.at": "\(instance.location)", "input.notice": "\(e)"])
        }
    }
}

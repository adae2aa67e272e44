import Foundation
import Logging
import RedisSink
import ServiceLifecycle
import SpillwayAgent
import SpillwayConfig
import SpillwayCore
import SpillwayInputs
import Spool
import UnixSignals

/// What `run` holds while the configuration may be reloaded: the pipeline running now (a
/// `ServiceGroup`), a new configuration waiting to replace it, and whether the agent is stopping.
actor RunControl {
    private var group: ServiceGroup?
    private var pending: Config?
    private var stopping = false

    /// `group` runs now; a stop or reload asked for before it existed applies to it at once.
    /// Returns false when the agent is stopping.
    func begin(_ group: ServiceGroup) async -> Bool {
        self.group = group
        if stopping || pending != nil { await group.triggerGracefulShutdown() }
        return !stopping
    }

    func end() { group = nil }

    /// SIGTERM or SIGINT: the pipeline stops, and no other starts.
    func stop() async {
        stopping = true
        await group?.triggerGracefulShutdown()
    }

    /// SIGHUP with a valid configuration: the pipeline stops cleanly, and one with `config` starts.
    func reload(_ config: Config) async {
        pending = config
        await group?.triggerGracefulShutdown()
    }

    /// The configuration to run next, when the pipeline stopped for a reload (not for a stop).
    func next() -> Config? {
        defer { pending = nil }
        return stopping ? nil : pending
    }
}

/// `spillway run` after its checks: runs the pipeline (writer, tail inputs, collector) with
/// `config` until SIGTERM or SIGINT. On SIGHUP it reads the configuration again: when it is valid,
/// the pipeline stops as at a clean stop (the collector and tailers first, then the writer drains the
/// queue into Redis or the spill buffer) and a new one starts with the new configuration, in the
/// same process and run: the data_dir lock, the spill buffer, the tail offsets (committed with
/// their lines), the breaker and the counters carry over, and added, removed and changed inputs all
/// take effect. When it is not valid, every problem is logged and the running configuration stays.
struct RunLoop {
    let options: ConfigOptions
    let dataDirectory: String
    let logger: Logger

    func run(_ initial: Config) async throws {
        let control = RunControl()
        // One signal source for the process's life: no gap between two pipelines where a signal
        // would take its default action (SIGHUP's is to terminate).
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint, .sighup)
        let watcher = Task {
            for await signal in signals {
                if signal == .sighup {
                    ServiceNotify.reloading()
                    if let config = reloaded(current: dataDirectory) {
                        await control.reload(config)
                    } else {
                        ServiceNotify.ready()
                    }
                } else {
                    logger.info("stopping", metadata: ["agent.signal": "\(signal)"])
                    ServiceNotify.stopping()
                    await control.stop()
                }
            }
        }
        defer { watcher.cancel() }

        var config = initial
        let writerStats = WriterStats()
        let collectorStats = CollectorStats()
        // The internal input, /metrics and /health read the same counters.
        let selfMetrics = SelfMetrics(writerStats: writerStats, collectorStats: collectorStats)
        var breakerCarry = BreakerCarry()
        var queue: RecordQueue?
        // One spill buffer: the writer's backlog and the tail inputs' offsets, committed together.
        var spool = openSpillBuffer(config: config, directory: dataDirectory, logger: logger)
        // A new run: `status` tells its errors from an earlier run's, and its counters satisfy
        // collected + backlog_at_start = written + replayed + duplicates + rejected + dropped + backlog.
        do {
            if let spool {
                // The rest stays as the last run left it until the writer saves.
                var state = try spool.readState()
                state.run = AgentState.Run(id: AgentRun.id, startedNs: AgentRun.startedNs)
                state.counters.backlogAtStart = spool.totals.records + spool.requeuedRecords
                try spool.saveState(state)
            }
        } catch {
            logger.warning("cannot save the agent state", metadata: ["error": "\(error)"])
        }
        var reopenBuffer = false
        while true {
            if reopenBuffer {
                // The new [buffer] settings take effect by opening the buffer again; when that
                // fails, the open one stays (with the old settings), never none.
                if let reopened = openSpillBuffer(config: config, directory: dataDirectory, logger: logger) {
                    spool = reopened
                } else {
                    logger.error("the spill buffer could not be opened with the new [buffer] settings; the open one stays, with the old ones")
                }
                reopenBuffer = false
            }
            // [agent] internal (on by default): the agent's own records, collected like any input.
            var pipeline = config
            if pipeline.agent.internalMetrics { pipeline.inputs.append(selfMetrics.internalInstance(agent: pipeline.agent)) }
            collectorStats.begin(instances: pipeline.inputs)
            let (routes, instanceRoute) = makeRoutes(pipeline)
            let q = RecordQueue(limit: pipeline.agent.bufferLimit, batchSize: pipeline.agent.batchSize, carrying: queue)
            queue = q
            selfMetrics.use(queue: q)
            let writer = WriterService(config: pipeline, queue: q, routes: routes, dataDirectory: dataDirectory,
                                       stats: writerStats, collectorStats: collectorStats, spool: spool,
                                       breakerCarry: breakerCarry, logger: logger)
            let tail = TailService(config: pipeline, queue: q, instanceRoute: instanceRoute, spool: spool, logger: logger, stats: collectorStats)
            // exec and execd run in ExecService; the collector schedules the others.
            let exec = ExecService(config: pipeline, queue: q, instanceRoute: instanceRoute, stats: collectorStats, logger: logger)
            let (collected, collectedIndex) = ExecService.withoutExecInputs(pipeline)
            let collector = CollectorService(config: collected, logger: logger, stats: collectorStats) { [logger] index, records in
                if logger.logLevel <= .debug {
                    for r in records { logger.debug("record", metadata: ["record.line": "\(LineProtocol.encode([r]).dropLast())"]) }
                }
                let route = instanceRoute[collectedIndex[index]]
                let dropped = q.push(records.map { QueuedRecord(record: $0, route: route) })
                if dropped > 0 { logger.warning("queue full: dropped the oldest records", metadata: ["queue.dropped": "\(dropped)", "queue.limit": "\(q.limit)"]) }
            }
            // Shutdown runs in reverse: the collector, the exec commands and the tailers stop first,
            // then the writer drains the queue.
            var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: writer), .init(service: tail), .init(service: exec), .init(service: collector)]
            // [agent] http_listen: /health and /metrics, restarted with each pipeline (a changed
            // address takes effect at a reload); stopped first.
            if let listen = pipeline.agent.httpListen {
                services.append(.init(service: HTTPEndpointService(listen: listen, metrics: selfMetrics, logger: logger)))
            }
            let group = ServiceGroup(configuration: .init(
                services: services,
                gracefulShutdownSignals: [],
                logger: logger
            ))
            // Listening for signals, the first pipeline (or a reloaded one) built: ready (unless a
            // stop came meanwhile).
            if await control.begin(group) { ServiceNotify.ready() }
            try await group.run()
            await control.end()
            guard let next = await control.next() else { break }
            // [buffer] settings live in the open buffer: a change reopens it.
            let (a, b) = (next.survive, config.survive)
            reopenBuffer = a.maxBytes != b.maxBytes || a.maxAge != b.maxAge || a.whenFull != b.whenFull || a.synchronous != b.synchronous
            // Another Redis: its own breaker, from closed.
            if next.redis.endpoint != config.redis.endpoint { breakerCarry = BreakerCarry() }
            LogFormat.shared.current = LogFormat.Kind(rawValue: next.agent.logFormat) ?? .text
            // Per plugin, how many instances before and after (locations move when lines do).
            let before = Dictionary(config.inputs.map { ($0.plugin, 1) }, uniquingKeysWith: +)
            let after = Dictionary(next.inputs.map { ($0.plugin, 1) }, uniquingKeysWith: +)
            let changed = Set(before.keys).union(after.keys).sorted().filter { before[$0] != after[$0] }
                .map { "\($0) \(before[$0] ?? 0)→\(after[$0] ?? 0)" }
            logger.notice("configuration reloaded", metadata: [
                "config.inputs": "\(next.inputs.count)", "config.inputs_before": "\(config.inputs.count)", "config.files": "\(next.files.joined(separator: ","))",
                "config.instances_changed": "\(changed.isEmpty ? "none" : changed.joined(separator: ", "))",
            ])
            config = next
        }
    }

    /// The configuration read again for SIGHUP, or nil (every problem logged) when it cannot be
    /// used: the running one then stays.
    func reloaded(current dataDirectory: String) -> Config? {
        logger.info("SIGHUP: reading the configuration again", metadata: ["config.path": "\(options.configPath)"])
        let config: Config
        do {
            config = try options.loadOrThrow()
        } catch {
            for d in error.diagnostics { logger.error("reload refused: a problem in the configuration", metadata: ["error": "\(d)"]) }
            logger.error("reload refused: the running configuration stays", metadata: ["config.problems": "\(error.diagnostics.count)"])
            return nil
        }
        let newDirectory = DataDirectory.resolve(explicit: config.agent.dataDir, environment: ProcessInfo.processInfo.environment)
        guard newDirectory == dataDirectory else {
            logger.error("reload refused: the running configuration stays", metadata: [
                "config.reason": "data_dir changed from \(dataDirectory) to \(newDirectory); the buffer, the lock and the tail offsets live there: restart the agent to move it",
            ])
            return nil
        }
        for w in config.warnings + Preflight.warnings(config) { logger.warning("\(w)") }
        return config
    }
}

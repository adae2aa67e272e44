import Logging
import RedisSink
import ServiceLifecycle
import SpillwayConfig
import SpillwayCore
import SpillwayInputs
import Synchronization

/// Runs every `[[inputs.exec]]` (a command at each interval, awaited without holding a thread) and
/// every `[[inputs.execd]]` (a long-running process, restarted with backoff when it ends) until
/// graceful shutdown, which stops running commands and processes: SIGTERM to their process group,
/// SIGKILL after `kill_grace`. Records go to the queue as the collector's do; failures and bad
/// lines are counted in `counters.input_errors` (through `stats`) and logged once per episode or
/// kind, as the collector does.
public final class ExecService: Service, Sendable {
    let config: Config
    let queue: RecordQueue
    let instanceRoute: [Int]
    let stats: CollectorStats
    let logger: Logger
    private let stop = ExecStop()

    public init(config: Config, queue: RecordQueue, instanceRoute: [Int], stats: CollectorStats, logger: Logger) {
        self.config = config
        self.queue = queue
        self.instanceRoute = instanceRoute
        self.stats = stats
        self.logger = logger
    }

    /// Whether `ExecService` runs this instance (the collector does not).
    public static func runs(_ instance: InputInstance) -> Bool {
        instance.input is ExecInput || instance.input is ExecdInput
    }

    /// `config` without the instances `ExecService` runs, for the collector, and for each instance
    /// left its index in `config.inputs`.
    public static func withoutExecInputs(_ config: Config) -> (Config, [Int]) {
        var out = config
        out.inputs = []
        var index: [Int] = []
        for (i, instance) in config.inputs.enumerated() where !runs(instance) {
            out.inputs.append(instance)
            index.append(i)
        }
        return (out, index)
    }

    public func run() async throws {
        let work = config.inputs.enumerated().filter { Self.runs($0.element) }
        guard !work.isEmpty else {
            try? await gracefulShutdown()
            return
        }
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await withTaskGroup(of: Void.self) { group in
                    for (index, instance) in work {
                        if let exec = instance.input as? ExecInput {
                            group.addTask { await self.execLoop(index: index, instance: instance, input: exec) }
                        } else if let execd = instance.input as? ExecdInput {
                            group.addTask { await self.execdLoop(index: index, instance: instance, options: execd.options) }
                        }
                    }
                }
            } onGracefulShutdown: {
                self.stop.stop()
            }
        } onCancel: {
            self.stop.stop()
        }
    }

    func push(_ records: [Record], index: Int, instance: InputInstance) {
        guard !records.isEmpty else { return }
        let common = instance.commonTags(agent: config.agent)
        let route = instanceRoute[index]
        var queued: [QueuedRecord] = []
        queued.reserveCapacity(records.count)
        for var r in records {
            if let name = instance.nameOverride { r.name = name }
            r.addTagsIfAbsent(common)
            queued.append(QueuedRecord(record: r, route: route))
        }
        if logger.logLevel <= .debug {
            for q in queued { logger.debug("record", metadata: ["record.line": "\(LineProtocol.encode([q.record]).dropLast())"]) }
        }
        let dropped = queue.push(queued)
        if dropped > 0 { logger.warning("queue full: dropped the oldest records", metadata: ["queue.dropped": "\(dropped)", "queue.limit": "\(queue.limit)"]) }
    }

    /// Sleeps `ns`, or less when the agent stops. False when it stops.
    func pause(_ ns: Int64) async -> Bool {
        do {
            try await cancelWhenGracefulShutdown { try await Task.sleep(for: .nanoseconds(ns)) }
        } catch {
            return false
        }
        return !stop.isStopped && !Task.isShuttingDownGracefully
    }

    /// `exec`: at each tick of its interval (aligned to the wall clock, plus jitter, as the
    /// collector's), runs the command to its end and hands its records on with the tick as their
    /// default timestamp. Runs do not overlap: ticks missed during a long run are skipped.
    func execLoop(index: Int, instance: InputInstance, input: ExecInput) async {
        let agent = config.agent
        let interval = instance.interval
        let who: Logger.Metadata = ["input.name": "exec", "input.at": "\(instance.location)", "exec.command": "\(input.options.command.display)"]
        var log = logger
        for (k, v) in who { log[metadataKey: k] = v }
        var episodes = Episodes()
        while !stop.isStopped {
            let now = wallClockNanoseconds()
            let next = (now / interval + 1) * interval
            let jitter = agent.jitter > 0 ? Int64.random(in: 0...agent.jitter) : 0
            guard await pause(next - now + jitter) else { return }
            var records: [Record] = []
            var report = InputReport()
            var failure: InputError?
            var note: ExecRunNote?
            let started = wallClockNanoseconds()
            let clock = monotonicNanoseconds()
            do {
                note = try await input.collect(now: next, stop: stop, into: &records, report: &report)
            } catch {
                failure = error
            }
            // A run cut short by the stop (or a reload) is neither an error nor data: said, not kept.
            if stop.isStopped {
                log.info("a run cut short by the stop or a reload; its output is not kept")
                return
            }
            if let failure {
                episodes.failed("input failed", error: failure.description, logger: logger, metadata: who)
            } else {
                if !episodes.open.isEmpty { episodes.recovered("input failed", logger: log) }
                if let stderr = note?.stderr {
                    log.info("command wrote to stderr", metadata: [
                        "exec.stderr": "\(stderr)", "exec.stderr_dropped_bytes": "\(note?.stderrDropped ?? 0)",
                    ])
                }
            }
            CollectorService.log(report, of: instance, stats: stats, logger: logger)
            let errors = report.errors(failed: failure != nil) + (failure == nil ? note?.unlisted ?? 0 : 0)
            if errors > 0 { stats.add(errors: errors) }
            stats.gathered(instance: instance, at: started, duration: monotonicNanoseconds() - clock, records: records.count, errors: errors)
            push(records, index: index, instance: instance)
        }
    }

    /// `execd`: keeps the process running. Each stdout line is parsed on arrival (no timestamp →
    /// the time it arrived) and handed on. When it ends (an error, counted) it is started again
    /// after `restart_delay`, doubled at each restart up to `max_restart_delay`, and back to
    /// `restart_delay` once a start lived `max_restart_delay`.
    func execdLoop(index: Int, instance: InputInstance, options: ExecdOptions) async {
        let display = options.command.display
        var named = logger
        for (k, v) in ["input.name": "execd", "input.at": "\(instance.location)", "exec.command": "\(display)"] as Logger.Metadata {
            named[metadataKey: k] = v
        }
        let log = named
        var delay = options.restartDelay
        var starts = 0
        while !stop.isStopped {
            starts += 1
            let start = starts
            let startedAt = monotonicNanoseconds()
            let limiter = Mutex<(window: Int64, logged: Int, suppressed: Int)>((startedAt, 0, 0))
            let perMinute = options.stderrLinesPerMinute
            // A stdout line dropped whole: counted, and logged once per kind.
            let dropped: @Sendable (Int, String, String) -> Void = { number, kind, message in
                self.stats.add(errors: 1)
                var report = InputReport()
                report.skip(.init(path: display, line: number, kind: kind, message: message))
                CollectorService.log(report, of: instance, stats: self.stats, logger: self.logger)
            }
            let events = DaemonEvents(
                line: { line, number in
                    var records: [Record] = []
                    var report = InputReport()
                    let arrived = wallClockNanoseconds()
                    ExecOutput.parseLine(line, number: number, format: options.dataFormat, now: arrived,
                                         source: display, into: &records, report: &report)
                    if !report.skipped.isEmpty {
                        CollectorService.log(report, of: instance, stats: self.stats, logger: self.logger)
                        self.stats.add(errors: report.skippedCount)
                    }
                    // Its figures (status, internal): a line is its gather.
                    self.stats.gathered(instance: instance, at: arrived, duration: 0, records: records.count, errors: report.skippedCount)
                    self.push(records, index: index, instance: instance)
                },
                longLine: { number in
                    dropped(number, "line too long", "a stdout line over \(options.maxLineBytes) bytes (max_line_bytes) was dropped")
                },
                cutLine: { number in
                    dropped(number, "cut off", "the last stdout line had no newline when the output ended (maybe cut short): dropped")
                },
                stderr: { text in
                    let now = monotonicNanoseconds()
                    let (logIt, suppressed) = limiter.withLock { l -> (Bool, Int) in
                        if now - l.window >= 60_000_000_000 { l.window = now; l.logged = 0 }
                        guard l.logged < perMinute else { l.suppressed += 1; return (false, 0) }
                        l.logged += 1
                        defer { l.suppressed = 0 }
                        return (true, l.suppressed)
                    }
                    guard logIt else { return }
                    var m: Logger.Metadata = ["exec.stderr": "\(text)"]
                    if suppressed > 0 { m["exec.stderr_lines_not_logged"] = "\(suppressed)" }
                    log.warning("process wrote to stderr", metadata: m)
                })
            do {
                let end = try await ExecProcess.runDaemon(
                    options.command, maxLine: options.maxLineBytes, maxStderrLine: options.maxStderrLine, killGrace: options.killGrace,
                    stop: stop, started: { pid in log.info("process started", metadata: ["exec.pid": "\(pid)", "exec.start": "\(start)"]) },
                    events: events)
                if stop.isStopped {
                    log.info("process stopped", metadata: ["exec.end": "\(end)"])
                    return
                }
                stats.add(errors: 1)
                log.warning("process ended; starting it again", metadata: [
                    "exec.end": "\(end)", "exec.restart_in": "\(Units.formatDuration(monotonicNanoseconds() - startedAt >= options.maxRestartDelay ? options.restartDelay : delay))",
                ])
            } catch {
                if stop.isStopped { return }
                stats.add(errors: 1)
                log.error("cannot start the process; trying again", metadata: ["error": "\(error)", "exec.restart_in": "\(Units.formatDuration(delay))"])
            }
            if monotonicNanoseconds() - startedAt >= options.maxRestartDelay { delay = options.restartDelay }
            guard await pause(delay) else { return }
            delay = min(delay * 2, options.maxRestartDelay)
        }
    }
}

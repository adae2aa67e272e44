import Logging
import RedisSink
import ServiceLifecycle
import SpillwayConfig
import SpillwayCore
import SpillwayInputs
import Spool
import Synchronization

/// Runs every `[[inputs.tail]]` on a thread of its own (file reads block) until graceful shutdown.
/// Lines go into the queue's line lane, which waits for room rather than drop (backpressure); their
/// offsets are committed by the writer with the batch that stores them. Needs the spill buffer: it
/// holds the offsets.
public final class TailService: Service, Sendable {
    let config: Config
    let queue: RecordQueue
    let instanceRoute: [Int]
    let spool: Spool?
    let logger: Logger
    /// Where each instance's polls and each file's lag are reported (the internal input, /metrics).
    let stats: CollectorStats?
    private let stopping = Atomic<Bool>(false)

    public init(config: Config, queue: RecordQueue, instanceRoute: [Int], spool: Spool?, logger: Logger, stats: CollectorStats? = nil) {
        self.stats = stats
        self.config = config
        self.queue = queue
        self.instanceRoute = instanceRoute
        self.spool = spool
        self.logger = logger
    }

    /// The tail instances of `config`, with their indexes.
    static func tailInstances(_ config: Config) -> [(Int, InputInstance, TailOptions)] {
        config.inputs.enumerated().compactMap { i, instance in
            (instance.input as? TailInput).map { (i, instance, $0.options) }
        }
    }

    public func run() async throws {
        let tails = Self.tailInstances(config)
        // A service that returns ends the whole group: without work, wait for shutdown instead.
        guard !tails.isEmpty else {
            try? await gracefulShutdown()
            return
        }
        guard let spool else {
            logger.critical("tail inputs need the spill buffer for their offsets; they do not run", metadata: ["tail.inputs": "\(tails.count)"])
            try? await gracefulShutdown()
            return
        }
        // The threads stop at graceful shutdown, and also when the group is cancelled.
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await withTaskGroup(of: Void.self) { group in
                    for (index, instance, options) in tails {
                        group.addTask {
                            await WriterService.onThread("spillway-tail") {
                                self.follow(index: index, instance: instance, options: options, spool: spool)
                            }
                        }
                    }
                }
            } onGracefulShutdown: {
                self.stopping.store(true, ordering: .relaxed)
            }
        } onCancel: {
            self.stopping.store(true, ordering: .relaxed)
        }
    }

    /// Set at graceful shutdown or cancellation (the tail threads are not tasks: they read this).
    var isStopping: Bool { stopping.load(ordering: .relaxed) }

    func follow(index: Int, instance: InputInstance, options: TailOptions, spool: Spool) {
        let route = instanceRoute[index]
        let log = logger.with(["input.name": "tail", "input.at": "\(instance.location)"])
        var offsets: [FileCheckpoint] = []
        var firstStart = false
        // The buffer is local: reading it fails only on a broken disk. Without offsets the input
        // could read lines twice or skip them, so it waits until it can read them.
        while !isStopping {
            do {
                offsets = try spool.offsets()
                firstStart = try !spool.isTailInputKnown(options.identity)
                break
            } catch {
                log.error("cannot read tail offsets; retrying", metadata: ["error": "\(error)"])
                _ = queue.sleep(1_000_000_000)
            }
        }
        let nameOverride = instance.nameOverride
        let env = TailEnvironment(
            offsets: offsets, firstStart: firstStart,
            registerFirstStart: { checkpoints in
                do { try spool.registerTailInput(options.identity, offsets: checkpoints, now: wallClockNanoseconds()) } catch {
                    log.error("cannot save the first start's offsets", metadata: ["error": "\(error)"])
                }
            },
            saveOffsets: { checkpoints in
                do { try spool.saveOffsets(checkpoints, now: wallClockNanoseconds()) } catch {
                    log.error("cannot save tail offsets", metadata: ["error": "\(error)"])
                }
            },
            forgetOffsets: { identities in try? spool.forgetOffsets(identities) },
            deliver: { lines in
                // Their route and name set in place, then the whole array moved into the queue:
                // no line is copied (a copy retains its tags, checkpoint and chunk, and its
                // release releases them again).
                for i in lines.indices {
                    lines[i].route = route
                    if let nameOverride { lines[i].record.name = nameOverride }
                }
                if self.logger.logLevel <= .debug {
                    for q in lines { log.debug("record", metadata: ["record.line": "\(LineProtocol.encode([q.fullRecord]).dropLast())"]) }
                }
                var records: [QueuedRecord] = []
                swap(&records, &lines)
                return self.queue.pushLines(consume records) { self.isStopping }
            },
            log: { message, path in log.notice("\(message)", metadata: ["tail.path": "\(path)"]) },
            commonTags: instance.commonTags(agent: config.agent)
        )
        let tailer = Tailer(options: options, environment: env)
        log.info("following files", metadata: ["tail.files": "\(options.files.map(\.pattern))", "tail.first_start": "\(firstStart)"])
        var emitted = tailer.emitted
        var lagsAt: Int64 = 0
        while !isStopping {
            let start = monotonicNanoseconds()
            let startWall = wallClockNanoseconds()
            guard tailer.poll(now: start) else { break }
            let spent = monotonicNanoseconds() - start
            if let stats {
                stats.gathered(instance: instance, at: startWall, duration: spent, records: tailer.emitted - emitted, errors: 0)
                emitted = tailer.emitted
                // Lags at most once a second: a poll may come every few milliseconds.
                if start - lagsAt >= 1_000_000_000 {
                    lagsAt = start
                    stats.setLags(at: instance.location, tailer.lags().map { TailLag(at: instance.location, path: $0.path, bytes: $0.bytes) })
                }
            }
            // A file left with bytes past its read budget: read on at once.
            if spent < options.pollInterval, !tailer.behind {
                if queue.sleep(options.pollInterval - spent), isStopping { break }
            }
        }
        tailer.close()
    }
}

extension Logger {
    func with(_ metadata: Logger.Metadata) -> Logger {
        var l = self
        for (k, v) in metadata { l[metadataKey: k] = v }
        return l
    }
}

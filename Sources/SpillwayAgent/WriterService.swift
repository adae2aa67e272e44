import Foundation
import Logging
import RedisSink
import ServiceLifecycle
import SpillwayConfig
import SpillwayCore
import Synchronization

/// The writer's counters, read by whoever reports them.
public final class WriterStats: Sendable {
    public struct Snapshot: Sendable, Equatable {
        public var counters = WriteCounters()
        public var batches: Int64 = 0
        public var failedAttempts: Int64 = 0
        /// Records dropped at shutdown because Redis did not take them in time.
        public var droppedAtShutdown: Int64 = 0
        public var lastError: String?
    }

    private let state = Mutex(Snapshot())

    public init() {}

    public var snapshot: Snapshot { state.withLock { $0 } }

    func update(_ body: (inout Snapshot) -> Void) { state.withLock { body(&$0) } }
}

/// Routes: index 0 is `[outputs.redis]`'s key and maxlen; an input instance with its own `key` or
/// `maxlen` gets a route of its own. Returns the routes and each instance's route index.
public func makeRoutes(_ config: Config) -> (routes: [Route], instanceRoute: [Int]) {
    var routes = [Route(key: config.redis.key, maxlen: config.redis.maxlen)]
    var instanceRoute: [Int] = []
    for instance in config.inputs {
        if instance.key == nil, instance.maxlen == nil {
            instanceRoute.append(0)
        } else {
            routes.append(Route(key: instance.key ?? config.redis.key, maxlen: instance.maxlen ?? config.redis.maxlen))
            instanceRoute.append(routes.count - 1)
        }
    }
    return (routes, instanceRoute)
}

/// Creates `path` (and its parents) with mode 0700 when missing; throws when it is not a writable
/// directory.
public func prepareDataDirectory(_ path: String) throws {
    let fm = FileManager.default
    var isDir: ObjCBool = false
    if !fm.fileExists(atPath: path, isDirectory: &isDir) {
        try fm.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    } else if !isDir.boolValue {
        throw InputError("data_dir \(path) is not a directory")
    }
    guard fm.isWritableFile(atPath: path) else { throw InputError("data_dir \(path) is not writable") }
}

/// Takes batches from the queue (every `flush_interval`, or as soon as `batch_size` records wait),
/// encodes each once and writes it to Redis as one pipeline, on a thread of its own (hiredis blocks).
/// A batch that meets a transient failure is kept and sent again, with backoff, until Redis takes it.
/// At graceful shutdown it drains the queue, giving Redis up to `timeout` to take the rest; what is
/// left then is counted as dropped and logged.
public final class WriterService: Service, Sendable {
    let config: Config
    let queue: RecordQueue
    let routes: [Route]
    let stats: WriterStats
    let logger: Logger
    let dataDirectory: String

    public init(config: Config, queue: RecordQueue, routes: [Route], dataDirectory: String, stats: WriterStats, logger: Logger) {
        self.config = config
        self.queue = queue
        self.routes = routes
        self.dataDirectory = dataDirectory
        self.stats = stats
        self.logger = logger
    }

    public func run() async throws {
        let minter = try StreamIDMinter(path: dataDirectory + "/stream-ids")
        let encoder = BatchEncoder(config: config.redis, routes: routes, minter: minter)
        var options = RedisConnectionOptions(endpoint: config.redis.endpoint)
        options.connectTimeout = config.redis.connectTimeout
        options.timeout = config.redis.timeout
        options.keepalive = config.redis.keepalive
        let box = UncheckedBox(RedisWriter(connection: RedisConnection(options: options), encoder: encoder, logger: logger))
        await withGracefulShutdownHandler {
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                let thread = Thread { [self] in
                    self.loop(box.value)
                    done.resume()
                }
                thread.name = "spillway-writer"
                thread.start()
            }
        } onGracefulShutdown: { [queue] in
            queue.close()
        }
    }

    func loop(_ writer: RedisWriter) {
        let flushInterval = config.agent.flushInterval
        var nextFlush = monotonicNanoseconds() + flushInterval
        var shutdownDeadline: Int64?
        var lastReport = monotonicNanoseconds()
        var lastLoggedError: String?
        while true {
            let records = queue.take(deadline: nextFlush)
            let now = monotonicNanoseconds()
            if now >= nextFlush { nextFlush = now + flushInterval }
            if queue.isClosed, shutdownDeadline == nil { shutdownDeadline = now + config.redis.timeout }
            if records.isEmpty {
                if queue.isClosed && queue.count == 0 { break }
                continue
            }
            let batch: EncodedBatch
            do {
                batch = try writer.encode(records, now: wallClockNanoseconds())
            } catch {
                // The ID marks could not be saved: sending would risk IDs a later run reuses.
                logger.critical("cannot save stream ID marks; records are dropped", metadata: ["error": "\(error)", "records": "\(records.count)"])
                stats.update { $0.droppedAtShutdown += Int64(records.count) }
                continue
            }
            var pending = PendingBatch(batch)
            var backoff: Int64 = 100_000_000
            while true {
                let (counters, error) = writer.attempt(&pending)
                stats.update {
                    $0.counters += counters
                    if error != nil { $0.failedAttempts += 1; $0.lastError = error }
                }
                guard let error else {
                    if lastLoggedError != nil { logger.notice("Redis is taking writes again") }
                    lastLoggedError = nil
                    break
                }
                if error != lastLoggedError {
                    logger.warning("Redis write failed; the batch is kept and retried", metadata: ["error": "\(error)", "endpoint": "\(config.redis.endpoint.display)"])
                    lastLoggedError = error
                }
                if queue.isClosed, shutdownDeadline == nil { shutdownDeadline = monotonicNanoseconds() + config.redis.timeout }
                if let deadline = shutdownDeadline, monotonicNanoseconds() >= deadline {
                    let left = Int64(pending.batch.recordCount - pending.settledRecords)
                    stats.update { $0.droppedAtShutdown += left }
                    logger.error("stopping with records Redis did not take", metadata: ["records": "\(left)", "error": "\(error)"])
                    break
                }
                _ = queue.sleep(backoff)
                backoff = min(backoff * 2, 5_000_000_000)
            }
            stats.update { $0.batches += 1 }
            if monotonicNanoseconds() - lastReport > 60_000_000_000 {
                lastReport = monotonicNanoseconds()
                report(level: .info)
            }
        }
        // After the deadline, whatever is still queued cannot be written either.
        if queue.count > 0 {
            let left = Int64(queue.count)
            stats.update { $0.droppedAtShutdown += left }
        }
        writer.connection.close()
        report(level: .info)
    }

    func report(level: Logger.Level) {
        let s = stats.snapshot
        logger.log(level: level, "writer", metadata: [
            "written": "\(s.counters.written)", "duplicates": "\(s.counters.duplicates)",
            "rejected": "\(s.counters.rejected)", "skipped_fields": "\(s.counters.skippedFields)",
            "dropped": "\(queue.dropped + s.droppedAtShutdown)", "queued": "\(queue.count)", "batches": "\(s.batches)",
        ])
    }
}

/// Hands a non-Sendable value to the one thread that uses it.
final class UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

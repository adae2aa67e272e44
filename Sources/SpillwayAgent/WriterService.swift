import Foundation
import Logging
import RedisSink
import ServiceLifecycle
import SpillwayBatch
import SpillwayConfig
import SpillwayCore
import Spool
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The writer's counters, read by whoever reports them.
public final class WriterStats: Sendable {
    public struct Snapshot: Sendable, Equatable {
        /// Written directly (`written`), and the duplicates and rejections of direct and replayed writes.
        public var counters = WriteCounters()
        /// Records put into the spill buffer.
        public var spilled: Int64 = 0
        /// Records written to Redis from the spill buffer.
        public var replayed: Int64 = 0
        /// Records the writer could not keep: dropped by the spill buffer (full, too old), or lost
        /// when there was no buffer to keep them.
        public var dropped: Int64 = 0
        public var batches: Int64 = 0
        public var failedAttempts: Int64 = 0
        public var lastError: String?
        public var lastErrorAt: Int64?
        /// Set by the encode stage when the buffer dropped records (the send stage logs it once).
        public var bufferFullEpisode = false
        public var lastSuccessAt: Int64?
        /// Records given a new stream ID after Redis refused them (see `PendingBatch.moved`).
        public var newIDs: Int64 = 0
        /// The breaker's state (`closed`, `half_open`, `open`) and the spill buffer's backlog, as the
        /// send stage last saw them (for the internal input and `/metrics`).
        public var breakerState = "closed"
        public var backlogRecords: Int64 = 0
        public var backlogBytes: Int64 = 0
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

/// Takes batches from the queue (every `flush_interval`, or as soon as `batch_size` records wait) and
/// writes each to Redis as one pipeline, in two stages on threads of their own (hiredis blocks):
/// - encode: mints each record's key and stream ID once, saves the ID marks, appends the batch to the
///   spill buffer (write-ahead), and hands it on (one batch at most waits between the stages, so the
///   queue is where records wait);
/// - send: the Router: sends the batch from memory when it is the oldest row and the breaker is
///   closed, else leaves it in the buffer, and replays older rows oldest first.
/// While one batch is on the wire the next is being encoded. At graceful shutdown the queue is
/// drained into the buffer; what Redis has not acknowledged stays there for the next start. Without
/// a buffer, batches are retried in memory and what is left at shutdown is counted as dropped.
public final class WriterService: Service, Sendable {
    let config: Config
    let queue: RecordQueue
    let routes: [Route]
    let stats: WriterStats
    let logger: Logger
    let dataDirectory: String?
    /// The inputs' counters, saved with the agent's state for `status`.
    let collectorStats: CollectorStats?
    /// The spill buffer, when the caller opened it (it is shared with the tail inputs' offsets);
    /// else the writer opens its own in `dataDirectory`.
    let givenSpool: Spool?
    /// The breaker, from one writer to the next across a reload (see `BreakerCarry`).
    let breakerCarry: BreakerCarry?
    /// Without a spill buffer: records Redis refused, waiting for the encode stage to give them new
    /// IDs (with one, they wait in its `requeued` table).
    private let movedInMemory = Mutex<[EncodedBatch]>([])

    func requeueInMemory(_ moved: EncodedBatch) { movedInMemory.withLock { $0.append(moved) } }
    var hasMovedInMemory: Bool { movedInMemory.withLock { !$0.isEmpty } }

    /// `dataDirectory` nil keeps the stream ID marks in memory only (benchmarks).
    public init(config: Config, queue: RecordQueue, routes: [Route], dataDirectory: String?, stats: WriterStats,
                collectorStats: CollectorStats? = nil, spool: Spool? = nil, breakerCarry: BreakerCarry? = nil, logger: Logger) {
        self.collectorStats = collectorStats
        self.breakerCarry = breakerCarry
        self.givenSpool = spool
        self.config = config
        self.queue = queue
        self.routes = routes
        self.dataDirectory = dataDirectory
        self.stats = stats
        self.logger = logger
    }

    func connectionOptions() -> RedisConnectionOptions {
        var options = RedisConnectionOptions(endpoint: config.redis.endpoint)
        options.connectTimeout = config.redis.connectTimeout
        options.timeout = config.redis.timeout
        options.keepalive = config.redis.keepalive
        options.tls = config.redis.tls
        return options
    }

    public func run() async throws {
        // The marks are as durable as the buffer: fsynced with synchronous = "full".
        let minter = try StreamIDMinter(path: dataDirectory.map { $0 + "/stream-ids" }, fsync: config.survive.synchronous == "full")
        let encoder = BatchEncoder(config: config.redis, routes: routes, minter: minter)
        // The encode stage reads streams' last IDs over a connection of its own.
        let encodeBox = UncheckedBox(RedisWriter(connection: RedisConnection(options: connectionOptions()), encoder: encoder, logger: logger))
        let sendBox = UncheckedBox(RedisWriter(connection: RedisConnection(options: connectionOptions()), encoder: encoder, logger: logger))
        let handoff = Handoff<HandedBatch>()
        let spool = UncheckedBox(givenSpool ?? dataDirectory.flatMap { openSpillBuffer(config: config, directory: $0, logger: logger) })
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await Self.onThread("spillway-encode") { self.encodeLoop(encodeBox.value, spool.value, handoff) } }
                group.addTask { await Self.onThread("spillway-send") { self.sendLoop(sendBox.value, spool.value, handoff) } }
            }
        } onGracefulShutdown: { [queue] in
            queue.close()
        }
    }

    static func onThread(_ name: String, _ body: @escaping @Sendable () -> Void) async {
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            let thread = Thread {
                // Foundation on Linux does not apply Thread.name: name the thread from inside, so
                // `ps -L`, top and perf show the stage (at most 15 bytes).
                let fd = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
                if fd >= 0 {
                    let bytes = Array(name.utf8.prefix(15))
                    _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                    close(fd)
                }
                body()
                done.resume()
            }
            thread.start()
        }
    }

    /// Encodes each batch once and, with a spill buffer, appends it there before handing it on
    /// (write-ahead): from then on a `kill -9` cannot lose it. A batch with tailed lines commits
    /// their files' offsets in the same transaction, and is never dropped: when it cannot be stored
    /// (no room, a full disk, an error) the stage waits and tries again, so the queue fills and the
    /// tailers stop reading. At shutdown such a batch is let go without committing its offsets
    /// (its lines are read again at the next start), and so is every later batch with lines.
    func encodeLoop(_ writer: RedisWriter, _ spool: Spool?, _ handoff: Handoff<HandedBatch>) {
        let flushInterval = config.agent.flushInterval
        var nextFlush = monotonicNanoseconds() + flushInterval
        var linesGivenUp = false
        // Tailed lines waiting for room: logged when the wait begins and when it ends, not per batch.
        var waitingSince: Int64?
        var waits = 0
        var episodes = Episodes()
        // One array for every batch (see `RecordQueue.take(deadline:into:)`).
        var records: [QueuedRecord] = []
        while true {
            queue.take(deadline: nextFlush, into: &records)
            let now = monotonicNanoseconds()
            if now >= nextFlush { nextFlush = now + flushInterval }
            // Records Redis refused go out again (with new IDs) with the next batch, or alone.
            let moved = hasMovedInMemory || (spool?.hasRequeued ?? false)
            if records.isEmpty, !moved || queue.isClosed {
                if queue.isClosed && queue.count == 0 { break }
                continue
            }
            while true {
                switch encodeAndStore(records, writer, spool, handoff, linesGivenUp: linesGivenUp, episodes: &episodes) {
                case .done:
                    if let since = waitingSince {
                        logger.notice("tailed lines are stored again; the tail inputs resume", metadata: [
                            "buffer.waited_seconds": "\(String(format: "%.1f", Double(monotonicNanoseconds() - since) / 1e9))", "buffer.retries": "\(waits)",
                        ])
                        waitingSince = nil
                        waits = 0
                    }
                case .retry(let why):
                    if queue.isClosed {
                        logger.warning("stopping with tailed lines that could not be stored; they are read again from their files at the next start",
                                       metadata: ["buffer.reason": "\(why)", "writer.records": "\(records.count)"])
                        linesGivenUp = true
                        continue
                    }
                    waits += 1
                    if waitingSince == nil {
                        waitingSince = monotonicNanoseconds()
                        logger.warning("tailed lines wait for room in the spill buffer; the tail inputs pause (logged once until they resume)", metadata: ["buffer.reason": "\(why)"])
                    }
                    _ = queue.sleep(200_000_000)
                    continue
                }
                break
            }
        }
        writer.connection.close()
        handoff.finish()
    }

    enum StoreResult { case done, retry(String) }

    /// One attempt at encoding `records` and storing them in the buffer, then handing them on.
    func encodeAndStore(_ records: [QueuedRecord], _ writer: RedisWriter, _ spool: Spool?, _ handoff: Handoff<HandedBatch>,
                        linesGivenUp: Bool, episodes: inout Episodes) -> StoreResult {
        var batch: EncodedBatch
        let marksCondition = "cannot save stream ID marks; metrics records are dropped (counted) and tailed lines wait"
        // Records Redis refused (see `PendingBatch.moved`) get new IDs first: minted before these
        // records', after every ID given before. From the buffer's `requeued` table (consumed by
        // this batch's append, in its transaction), or from memory without a buffer.
        var consuming: [Int64] = []
        var moved: [EncodedBatch] = []
        if let spool, spool.hasRequeued, let rows = try? spool.requeued() {
            consuming = rows.map(\.id)
            moved = rows.map(\.batch)
        }
        // (In memory also beside a buffer: from a batch the buffer could not store.)
        let fromMemory: [EncodedBatch] = movedInMemory.withLock { m in defer { m.removeAll() }; return m }
        moved += fromMemory
        if records.isEmpty, moved.isEmpty { return .done }
        var handedOn = false
        defer { if !handedOn, !fromMemory.isEmpty { movedInMemory.withLock { $0.insert(contentsOf: fromMemory, at: 0) } } }
        let (reminted, newIDs) = moved.isEmpty ? (EncodedBatch(), 0)
            : writer.encoder.ids.withMinter { EncodedBatch.reminting(moved, minter: &$0) }
        do {
            batch = try writer.encode(records, now: wallClockNanoseconds()).after(reminted)
            episodes.recovered(marksCondition, logger: logger)
        } catch {
            episodes.failed(marksCondition, error: "\(error)", logger: logger, level: .critical)
            // The ID marks could not be saved: sending would risk IDs a later run reuses.
            if records.contains(where: { $0.checkpoint != nil }), !linesGivenUp { return .retry("cannot save stream ID marks: \(error)") }
            stats.update { $0.dropped += Int64(records.count) }
            return .done
        }
        if batch.lineCount > 0, linesGivenUp {
            // An earlier batch's lines were let go: committing these offsets would skip them. They
            // are read again (after a reload, by the same run: not collected twice).
            stats.update { $0.dropped += Int64(batch.recordCount - batch.lineCount) }
            queue.uncount(batch.lineCount)
            return .done
        }
        defer { if handedOn, newIDs > 0 { stats.update { $0.newIDs += Int64(newIDs) } } }
        guard let spool else {
            handoff.put(HandedBatch(id: nil, batch: batch))
            handedOn = true
            return .done
        }
        do {
            let outcome = try spool.append(batch, now: wallClockNanoseconds(), consuming: consuming)
            if outcome.droppedRecords > 0 { stats.update { $0.dropped += outcome.droppedRecords } }
            // (Lines waiting for room are not dropped: that is logged apart, by encodeLoop.)
            if outcome.droppedRecords > 0 || (outcome.diskFull && !outcome.noRoom) {
                stats.update { $0.bufferFullEpisode = true }
            }
            if outcome.noRoom { return .retry(outcome.diskFull ? "disk full" : "buffer full (max_bytes)") }
            if let id = outcome.id {
                handoff.put(HandedBatch(id: id, batch: batch))
                handedOn = true
            }
            episodes.recovered("cannot write to the spill buffer", logger: logger)
        } catch {
            episodes.failed("cannot write to the spill buffer", error: "\(error)", logger: logger,
                            metadata: ["writer.note": "tailed lines wait; a batch without lines is kept in memory and sent from there"])
            if batch.lineCount > 0 { return .retry("cannot write to the spill buffer: \(error)") }
            // The buffer failed (not full): send this batch from memory rather than lose it.
            handoff.put(HandedBatch(id: nil, batch: batch))
            handedOn = true
        }
        return .done
    }

    /// The send stage: the router (direct while the breaker is closed and no backlog exists, else the
    /// spill buffer) and the replayer (oldest first, between incoming batches).
    func sendLoop(_ writer: RedisWriter, _ spool: Spool?, _ handoff: Handoff<HandedBatch>) {
        var router = Router(sender: writer, backlog: spool, clock: SystemClock(), stats: stats, upstream: self,
                            settings: RouterSettings(config), logger: logger,
                            breaker: breakerCarry?.take(settings: config.survive.breaker))
        var lastReport = monotonicNanoseconds()
        while true {
            // Two batches on the wire at most: then the older one's replies are read.
            if router.inFlightIsFull { router.finishOldest() }
            // Wait for the next batch at most until the next replay step is due.
            let pending = router.replayPending
            var wait: Int64 = pending ? (router.replayDue() ? 0 : 20_000_000) : 1_000_000_000
            // Delivered batches' rows are deleted while Redis works on the next batch, or in the
            // encode stage's next append; when no batch comes within 2 ms, here.
            if router.acknowledgementsPending { wait = min(wait, 2_000_000) }
            // A batch on the wire: the next one goes out behind it if it comes within 1 ms (Redis
            // is still at work on this one), else its replies are read now.
            if router.hasInFlight { wait = min(wait, 1_000_000) }
            switch handoff.take(timeout: wait) {
            case .value(let item): router.handle(item)
            case .finished:
                router.drainInFlight()
                router.flushAcknowledgements()
                // Without a buffer, refused records the encode stage did not take again are lost.
                let left = movedInMemory.withLock { m in defer { m.removeAll() }; return m.reduce(0) { $0 + $1.recordCount } }
                if left > 0 {
                    stats.update { $0.dropped += Int64(left) }
                    logger.error("stopping with records Redis refused and no spill buffer to keep them; they are dropped", metadata: ["writer.records": "\(left)"])
                }
                router.saveState(force: true)
                breakerCarry?.keep(router.breaker)
                writer.connection.close()
                report(level: .info)
                return
            case .timedOut:
                router.finishOldest()
                router.flushAcknowledgements()
            }
            if pending, !handoff.hasValue { router.replayStep() }
            router.saveState(force: false)
            if monotonicNanoseconds() - lastReport >= 60_000_000_000 {
                lastReport = monotonicNanoseconds()
                report(level: .info)
            }
        }
    }

    func report(level: Logger.Level) {
        let s = stats.snapshot
        logger.log(level: level, "writer", metadata: [
            "writer.written": "\(s.counters.written)", "writer.duplicates": "\(s.counters.duplicates)",
            "writer.rejected": "\(s.counters.rejected)", "writer.skipped_fields": "\(s.counters.skippedFields)",
            "writer.spilled": "\(s.spilled)", "writer.replayed": "\(s.replayed)",
            "writer.dropped": "\(queue.dropped + s.dropped)", "writer.queued": "\(queue.count)", "writer.batches": "\(s.batches)",
            "writer.new_ids": "\(s.newIDs)",
        ])
    }
}

/// The breaker handed from one writer to the next when the agent reloads its configuration: an
/// outage in progress stays open (with its backoff and its start), and a closed breaker keeps its
/// count of failures. Taken only when the `[breaker]` settings are the same.
public final class BreakerCarry: Sendable {
    private let kept = Mutex<CircuitBreaker?>(nil)

    public init() {}

    func keep(_ breaker: CircuitBreaker) { kept.withLock { $0 = breaker } }

    /// The kept breaker when its settings are `settings` (once), else nil.
    func take(settings: CircuitBreaker.Settings) -> CircuitBreaker? {
        kept.withLock { k in
            defer { k = nil }
            return k?.settings == settings ? k : nil
        }
    }
}

/// A batch from the encode stage: its row in the spill buffer (nil without one), and the batch.
struct HandedBatch: Sendable {
    var id: Int64?
    var batch: EncodedBatch
}

/// A one-slot handoff between two threads: `put` waits while the slot is full, `take` waits while it
/// is empty and returns nil once `finish` was called and the slot is empty.
final class Handoff<T: Sendable>: @unchecked Sendable {
    private let lock = ConditionLock()
    private var slot: T?
    private var finished = false

    func put(_ value: T) {
        lock.withLock {
            while slot != nil { lock.wait() }
            slot = value
            lock.broadcast()
        }
    }

    enum Taken { case value(T), timedOut, finished }

    /// Waits up to `timeout` ns for a value.
    func take(timeout: Int64) -> Taken {
        lock.withLock {
            let deadline = monotonicNanoseconds() + timeout
            while slot == nil, !finished {
                if timeout <= 0 || !lock.wait(untilMonotonic: deadline) { break }
            }
            guard let value = slot else { return finished ? .finished : .timedOut }
            slot = nil
            lock.broadcast()
            return .value(value)
        }
    }

    var hasValue: Bool { lock.withLock { slot != nil } }

    func finish() {
        lock.withLock {
            finished = true
            lock.broadcast()
        }
    }
}

/// Hands a non-Sendable value to the one thread that uses it.
final class UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

import RedisSink
import SpillwayBatch
import SpillwayConfig
import SpillwayCore
import Spool

// What the router (Router.swift) is given, each as a protocol over what it uses: WriterService gives
// it the real ones, tests give it a scripted Redis and a manual clock (Tests/SpillwayAgentTests/
// RouterTests.swift).

/// What the router uses of its connection to Redis: batches written two at a time (`begin`, then
/// `finish` in the same order), one attempt at once without a spill buffer, and a PING before a
/// half-open breaker lets a batch through. `RedisWriter` is the real one.
protocol RouterSender: AnyObject {
    /// A batch on the wire whose replies are not read yet.
    associatedtype Attempt
    /// Writes every unsettled command of the batch; does not wait for the replies.
    func begin(_ batch: PendingBatch) -> Attempt
    /// Reads the replies of the oldest batch begun and settles what they settle. Returns what it
    /// settled, and the error that left commands pending (or refused), if any.
    func finish(_ batch: inout PendingBatch, _ attempt: Attempt) -> (counters: WriteCounters, error: String?)
    /// `begin` and `finish` at once, duplicate replies verified (nothing else on the wire).
    func attempt(_ batch: inout PendingBatch) -> (counters: WriteCounters, error: String?)
    /// Tells the XADDs answered "equal or smaller" apart (see `RedisWriter.verifySuspects`).
    func verifySuspects(_ batch: inout PendingBatch) -> WriteCounters
    /// The records Redis refused for good since the last call, per key.
    func takeRejections() -> [(key: [UInt8], rejection: RedisWriter.Rejection)]
    /// PINGs on its own (nothing else on the wire). Returns the error (as a failed write names it:
    /// a refused connection, refused credentials, an error reply), or nil when Redis answered.
    func ping() -> String?
}

extension RedisWriter: RouterSender {
    func ping() -> String? {
        let ping = connection.pipeline([RedisCommand(["PING"])])
        if let error = ping.error { return "\(error)" }
        if let reply = ping.replies.first, reply.isError { return reply.string ?? "an error reply to PING" }
        return nil
    }
}

/// What the router uses of the spill buffer: its rows oldest first, what to do with a row after an
/// attempt, and the agent's saved state. `Spool` is the real one.
protocol RouterBacklog: AnyObject {
    /// The buffer file (named in log lines).
    var path: String { get }
    var isEmpty: Bool { get }
    var totals: BacklogTotals { get }
    /// Whether the file system's reserve is held (see `Spool.reserveHeld`).
    var reserveHeld: Bool { get }
    func newestID() throws -> Int64?
    /// The ids of the `n` oldest rows.
    func oldestIDs(_ n: Int) -> [Int64]
    /// The oldest rows after row `after`, at most `limit` of them and about `records` records.
    func oldestBatches(limit: Int, after: Int64, upTo: Int64, records: Int64?) throws -> (batches: [(id: Int64, batch: EncodedBatch)], unreadable: [Spool.Unreadable])
    /// Row `id` becomes what is left of it.
    func replace(id: Int64, with batch: EncodedBatch) throws
    /// Row `id` becomes `remainder`, and `moved` waits for new IDs, in one transaction.
    func requeue(id: Int64, remainder: EncodedBatch, moved: EncodedBatch, now: Int64) throws
    /// Row `id` was delivered: deleted with the next write.
    func acknowledgeLater(id: Int64)
    /// Row `id` is on the wire (not dropped to make room) until `doneSending`.
    func markSending(_ id: Int64)
    func doneSending(_ id: Int64)
    var hasAcknowledgements: Bool { get }
    func flushAcknowledgements() throws
    func setAside(_ bad: [Spool.Unreadable], now: Int64) throws
    func addRejected(_ rejections: [(key: [UInt8], records: Int64, reply: String)], now: Int64) throws
    /// The agent's state as last saved (by this run's start, an earlier router, an earlier run).
    func readState() throws -> AgentState
    func saveState(_ state: AgentState) throws
}

extension Spool: RouterBacklog {}

/// The router's time: monotonic nanoseconds for the breaker, replay pacing and intervals, and the
/// wall clock for what is saved (when an error happened, when the state was saved).
protocol RouterClock {
    /// Monotonic nanoseconds (never steps).
    func now() -> Int64
    /// Nanoseconds since the epoch.
    func wallNow() -> Int64
}

/// The machine's clocks.
struct SystemClock: RouterClock {
    func now() -> Int64 { monotonicNanoseconds() }
    func wallNow() -> Int64 { wallClockNanoseconds() }
}

/// Where the router counts what became of batches (and finds that the encode stage saw the buffer
/// full). `WriterStats` is the real one: the internal input, `/metrics` and the saved state read it.
protocol RouterStatsSink: AnyObject {
    var snapshot: WriterStats.Snapshot { get }
    func update(_ body: (inout WriterStats.Snapshot) -> Void)
}

extension WriterStats: RouterStatsSink {}

/// What the router uses of the rest of the writer: the queue's and the inputs' figures (saved with
/// the agent's state), and, without a spill buffer, where refused records go for new IDs and how the
/// in-memory retry waits and learns of the stop. `WriterService` is the real one.
protocol RouterUpstream: AnyObject {
    /// Records ever taken into the queue (`counters.collected`).
    var collected: Int64 { get }
    /// Records the queue dropped (full).
    var queueDropped: Int64 { get }
    /// The inputs' errors so far.
    var inputErrors: Int64 { get }
    /// Per input: its last collection, duration, errors and records (nil when not known).
    var inputFigures: [InputFigures]? { get }
    /// Whether the agent is stopping (the in-memory retry gives up).
    var isStopping: Bool { get }
    /// Waits up to `ns`, less when the agent stops.
    func pause(_ ns: Int64)
    /// Without a spill buffer: records Redis refused, for the encode stage to give new IDs.
    func requeueInMemory(_ moved: EncodedBatch)
}

extension WriterService: RouterUpstream {
    var collected: Int64 { queue.pushed }
    var queueDropped: Int64 { queue.dropped }
    var inputErrors: Int64 { collectorStats?.errors ?? 0 }
    var inputFigures: [InputFigures]? { collectorStats?.inputFigures }
    var isStopping: Bool { queue.isClosed }
    func pause(_ ns: Int64) { _ = queue.sleep(ns) }
}

/// The router's settings: plain values from the configuration.
struct RouterSettings: Sendable, Equatable {
    var breaker = CircuitBreaker.Settings()
    /// `[buffer] replay_batch_size`: records per replay step, at most (a bigger row goes alone).
    var replayBatchSize = 1000
    /// `[buffer] replay_rate`: replayed records per second, at most (nil: as fast as Redis takes them).
    var replayRate: Int?
    /// `[agent] batch_size` (how many rows a replay step reads).
    var batchSize = 1000

    init() {}

    init(_ config: Config) {
        breaker = config.survive.breaker
        replayBatchSize = config.survive.replayBatchSize
        replayRate = config.survive.replayRate
        batchSize = config.agent.batchSize
    }
}

import Foundation
import Logging
@testable import RedisSink
@testable import SpillwayAgent
import SpillwayBatch
import SpillwayCore
import Spool
import Synchronization
import Testing

// The send stage's router driven in-process: a scripted Redis (RouterSender), a manual clock, and a
// real spill buffer in a temporary directory. No redis-server, no sleeps: time moves when a test
// advances the clock. Each test plays the part of WriterService's send loop (handle, finishOldest,
// replayStep, drainInFlight, flushAcknowledgements) step by step.

// MARK: collaborators

/// Redis as a test scripts it. Each batch written (`begin`) takes the next scripted reply (`.ok`
/// when none is left); `ping` takes the next scripted PING answer (true when none is left). It
/// keeps what reached Redis (per key, the stream IDs written, in order) and every attempt's commands
/// as they went out on the wire. Settles a `PendingBatch` as `RedisWriter.finish` does for those
/// replies (through RedisSink's internals: hence `@testable`).
final class ScriptedRedis: RouterSender {
    enum Reply {
        /// Every command written.
        case ok
        /// The connection breaks after `after` replies: those commands are written, the others stay
        /// unanswered (pending, their IDs kept).
        case connectionLost(after: Int)
        /// Redis refuses these XADDs (by stream ID) with a transient error (OOM, READONLY…): surely not
        /// written, so moved to get new IDs; the others are written.
        case refuse(Set<String>, message: String)
        /// Redis rejects these XADDs for good (WRONGTYPE…): settled, counted as rejected; the others
        /// are written.
        case reject(Set<String>, message: String)
        /// Redis refuses the connection's credentials: nothing is written.
        case wrongPassword
    }

    static let connectionError = "Connection refused"
    static let credentialsError = "WRONGPASS invalid username-password pair or user is disabled."

    var replies: [Reply] = []
    /// What the next PINGs get: nil (answered), or the error.
    var pings: [String?] = []
    /// Per key, the stream IDs Redis holds, in the order it took them.
    private(set) var streams: [String: [String]] = [:]
    /// Per attempt, its commands as they went out (`key id`).
    private(set) var wire: [[String]] = []
    /// Per attempt, the clock's monotonic time when it went out.
    private(set) var wireTimes: [Int64] = []
    private(set) var pingCount = 0
    private var rejections: [(key: [UInt8], rejection: RedisWriter.Rejection)] = []
    let clock: ManualClock

    init(clock: ManualClock) { self.clock = clock }

    struct Attempt {
        var indices: [Int]
        var reply: Reply
    }

    static func key(_ batch: EncodedBatch, _ i: Int) -> String { String(decoding: batch.argument(i, 1), as: UTF8.self) }
    static func id(_ batch: EncodedBatch, _ i: Int) -> String {
        String(decoding: batch.argument(i, batch.streamIDArgument(i) ?? 2), as: UTF8.self)
    }

    func begin(_ p: PendingBatch) -> Attempt {
        let indices = p.done.indices.filter { !p.done[$0] }
        wire.append(indices.map { "\(Self.key(p.batch, $0)) \(Self.id(p.batch, $0))" })
        wireTimes.append(clock.monotonic)
        return Attempt(indices: indices, reply: replies.isEmpty ? .ok : replies.removeFirst())
    }

    func finish(_ p: inout PendingBatch, _ sent: Attempt) -> (counters: WriteCounters, error: String?) {
        var counters = WriteCounters()
        var error: String?
        func written(_ i: Int) {
            streams[Self.key(p.batch, i), default: []].append(Self.id(p.batch, i))
            p.done[i] = true
            p.settledRecords += 1
            counters.written += 1
        }
        for (n, i) in sent.indices.enumerated() {
            let id = Self.id(p.batch, i)
            switch sent.reply {
            case .ok:
                written(i)
            case .connectionLost(let after):
                if n < after { written(i) } else { error = Self.connectionError }
            case .refuse(let ids, let message):
                guard ids.contains(id) else { written(i); continue }
                p.done[i] = true
                p.settledRecords += 1
                p.moved.append(i)
                error = error ?? message
            case .reject(let ids, let message):
                guard ids.contains(id) else { written(i); continue }
                p.done[i] = true
                p.settledRecords += 1
                counters.rejected += 1
                rejections.append((Array(Self.key(p.batch, i).utf8), RedisWriter.Rejection(records: 1, reply: message)))
            case .wrongPassword:
                error = Self.credentialsError
            }
        }
        return (counters, error)
    }

    func attempt(_ p: inout PendingBatch) -> (counters: WriteCounters, error: String?) {
        finish(&p, begin(p))
    }

    func verifySuspects(_ p: inout PendingBatch) -> WriteCounters { WriteCounters() }

    func takeRejections() -> [(key: [UInt8], rejection: RedisWriter.Rejection)] {
        defer { rejections = [] }
        return rejections
    }

    func ping() -> String? {
        pingCount += 1
        return pings.isEmpty ? nil : pings.removeFirst()
    }
}

/// A clock that moves only when told.
final class ManualClock: RouterClock {
    private(set) var monotonic: Int64 = 5_000_000_000
    private(set) var wall: Int64 = 1_750_000_000_000_000_000

    func now() -> Int64 { monotonic }
    func wallNow() -> Int64 { wall }

    func advance(_ ns: Int64) {
        monotonic += ns
        wall += ns
    }
}

/// The rest of the writer, as far as the router sees it.
final class QuietUpstream: RouterUpstream {
    var collected: Int64 = 0
    var queueDropped: Int64 = 0
    var inputErrors: Int64 = 0
    var inputFigures: [InputFigures]?
    var isStopping = false
    var requeued: [EncodedBatch] = []
    func pause(_ ns: Int64) {}
    func requeueInMemory(_ moved: EncodedBatch) { requeued.append(moved) }
}

/// Keeps the log lines, to tell what the router said.
struct CapturingLogHandler: LogHandler {
    let lines: LogLines
    var logLevel: Logger.Level = .trace
    var metadata: Logger.Metadata = [:]
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) { lines.append("\(event.level) \(event.message)") }
}

final class LogLines: Sendable {
    private let lines = Mutex<[String]>([])
    func append(_ line: String) { lines.withLock { $0.append(line) } }
    var all: [String] { lines.withLock { $0 } }
}

/// XADDs, one record each: `(key, ms)` gives the entry ID `ms-0`.
func xadds(_ records: [(key: String, ms: Int)]) -> EncodedBatch {
    let commands = records.enumerated().map { n, r in
        EncodedCommand(command: RedisCommand(["XADD", r.key, "MAXLEN", "~", "1000", "\(r.ms)-0", "v", "\(r.ms)", "timestamp", "\(r.ms)"]),
                       key: Array(r.key.utf8), role: .record(n))
    }
    return EncodedBatch(commands: commands, recordCount: records.count, rejectedAtEncoding: 0, skippedFields: 0)
}

func xadds(_ key: String, _ ms: ClosedRange<Int>) -> EncodedBatch { xadds(ms.map { (key, $0) }) }

/// A router, its collaborators, and a spill buffer in a temporary directory (removed at the end).
final class RouterRig {
    let dir: String
    let spool: Spool
    let clock = ManualClock()
    let redis: ScriptedRedis
    let stats = WriterStats()
    let upstream = QuietUpstream()
    let log = LogLines()
    var router: Router<ScriptedRedis>

    /// `backlog`: rows an earlier run left in the buffer, before the router starts; `state`: the
    /// agent's state saved before it starts.
    init(_ settings: RouterSettings = RouterSettings(), backlog: [EncodedBatch] = [], state: AgentState? = nil) throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-router-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        spool = try Spool(directory: dir)
        for b in backlog { _ = try spool.append(b, now: clock.wallNow()) }
        if let state { try spool.saveState(state) }
        redis = ScriptedRedis(clock: clock)
        let lines = log
        router = Router(sender: redis, backlog: spool, clock: clock, stats: stats, upstream: upstream, settings: settings,
                        logger: Logger(label: "router-test") { _ in CapturingLogHandler(lines: lines) }, jitter: { 0 })
    }

    deinit { try? FileManager.default.removeItem(atPath: dir) }

    /// A rig whose breaker (threshold 1, a cool-down of a second) one lost connection opened, the
    /// batch of record a:1 left in the buffer.
    static func openedByOneFailure() throws -> RouterRig {
        var settings = RouterSettings()
        settings.breaker.failureThreshold = 1
        settings.breaker.openTimeout = second
        let rig = try RouterRig(settings)
        rig.redis.replies = [.connectionLost(after: 0)]
        try rig.produce(xadds("a", 1...1))
        rig.router.finishOldest()
        return rig
    }

    /// The encode stage's part: the batch is appended to the buffer (write-ahead) and handed on.
    func produce(_ batch: EncodedBatch) throws {
        let id = try #require(try spool.append(batch, now: clock.wallNow()).id)
        router.handle(HandedBatch(id: id, batch: batch))
    }

    /// Replays until no row is left to replay, each step's batches settled before the next (at
    /// most `steps` steps). Returns the records sent per step.
    @discardableResult
    func replayAll(steps: Int = 20) -> [Int] {
        var chunks: [Int] = []
        for _ in 0..<steps where router.replayPending {
            let before = redis.wire.count
            router.replayStep()
            router.drainInFlight()
            router.flushAcknowledgements()
            chunks.append(redis.wire[before...].reduce(0) { $0 + $1.count })
        }
        return chunks
    }

    var rowsLeft: Int64 { spool.totals.records }
}

let second: Int64 = 1_000_000_000

// MARK: order behind a backlog

@Suite struct RouterTests {
    /// Nothing waiting and the breaker closed: a batch goes out from memory at once, and its row is
    /// deleted once Redis acknowledged it.
    @Test func aBatchGoesOutDirectlyWhenNothingWaits() throws {
        let rig = try RouterRig()
        try rig.produce(xadds("a", 1...3))
        #expect(rig.redis.wire == [["a 1-0", "a 2-0", "a 3-0"]])
        #expect(rig.router.inFlight.count == 1)
        let settled = rig.router.finishOldest()
        #expect(settled)
        rig.router.flushAcknowledgements()
        #expect(rig.redis.streams == ["a": ["1-0", "2-0", "3-0"]])
        #expect(rig.spool.isEmpty && rig.rowsLeft == 0)
        let s = rig.stats.snapshot
        #expect(s.counters.written == 3 && s.replayed == 0 && s.spilled == 0 && s.batches == 1 && s.failedAttempts == 0)
        #expect(rig.router.breaker.state == .closed)
    }

    /// Rows an earlier run left: a new batch is not sent ahead of them. It waits in the buffer
    /// (counted as spilled) and goes out after them, oldest first, so per key Redis gets the IDs
    /// in the order they were produced; a batch after the backlog is gone goes out directly again.
    @Test func aNewBatchWaitsBehindOlderRowsAndGoesOutAfterThem() throws {
        let rig = try RouterRig(backlog: [xadds([("a", 1), ("b", 1), ("a", 2)]), xadds([("b", 2), ("a", 3)])])
        try rig.produce(xadds([("a", 4), ("b", 3)]))
        #expect(rig.redis.wire.isEmpty, "sent ahead of the backlog: \(rig.redis.wire)")
        #expect(rig.stats.snapshot.spilled == 2)
        #expect(rig.rowsLeft == 7 && rig.spool.totals.batches == 3)
        #expect(rig.router.replayPending)

        rig.replayAll()
        #expect(rig.redis.wire.flatMap { $0 } == ["a 1-0", "b 1-0", "a 2-0", "b 2-0", "a 3-0", "a 4-0", "b 3-0"])
        #expect(rig.redis.streams == ["a": ["1-0", "2-0", "3-0", "4-0"], "b": ["1-0", "2-0", "3-0"]])
        #expect(rig.spool.isEmpty && !rig.router.replayPending)
        var s = rig.stats.snapshot
        // Replayed records count as replayed, not written.
        #expect(s.replayed == 7 && s.counters.written == 0 && s.spilled == 2)
        #expect(rig.log.all.contains("notice the backlog is replayed; writing directly again"), "\(rig.log.all)")

        try rig.produce(xadds("a", 5...5))
        #expect(rig.redis.wire.last == ["a 5-0"] && rig.router.inFlight.first?.replay == false)
        rig.router.drainInFlight()
        s = rig.stats.snapshot
        #expect(s.counters.written == 1 && s.replayed == 7 && s.spilled == 2)
    }

    /// A batch that comes while the older rows are on the wire (being replayed) is not held back
    /// for them to be settled: it goes out right behind them, and Redis gets the three in order.
    @Test func aBatchComingWhileTheBacklogIsOnTheWireGoesOutBehindIt() throws {
        let rig = try RouterRig(backlog: [xadds("a", 1...2), xadds("a", 3...4)])
        rig.router.replayStep()
        #expect(rig.router.inFlight.map(\.id) == [1, 2] && rig.redis.wire.count == 2)
        try rig.produce(xadds("a", 5...6))
        #expect(rig.router.inFlight.map(\.id) == [1, 2, 3])
        #expect(rig.redis.wire == [["a 1-0", "a 2-0"], ["a 3-0", "a 4-0"], ["a 5-0", "a 6-0"]])
        rig.router.drainInFlight()
        rig.router.flushAcknowledgements()
        #expect(rig.redis.streams == ["a": ["1-0", "2-0", "3-0", "4-0", "5-0", "6-0"]])
        #expect(rig.spool.isEmpty)
        let s = rig.stats.snapshot
        #expect(s.replayed == 4 && s.counters.written == 2 && s.spilled == 0)
    }

    // MARK: partial batches

    /// The connection breaks after two of four replies: the two Redis took are not sent again; the
    /// row becomes the two unanswered records (with their IDs), replayed next.
    @Test func aBrokenConnectionKeepsOnlyWhatWasNotAcknowledged() throws {
        let rig = try RouterRig()
        rig.redis.replies = [.connectionLost(after: 2)]
        try rig.produce(xadds("a", 1...4))
        let settled = rig.router.finishOldest()
        #expect(!settled)
        #expect(rig.redis.streams == ["a": ["1-0", "2-0"]])
        #expect(rig.rowsLeft == 2 && rig.spool.totals.batches == 1)
        var s = rig.stats.snapshot
        #expect(s.counters.written == 2 && s.spilled == 2 && s.failedAttempts == 1 && s.lastError == ScriptedRedis.connectionError)
        #expect(rig.router.breaker.state == .closed && rig.router.breaker.consecutiveFailures == 1)

        #expect(rig.replayAll() == [2])
        #expect(rig.redis.wire == [["a 1-0", "a 2-0", "a 3-0", "a 4-0"], ["a 3-0", "a 4-0"]])
        #expect(rig.redis.streams == ["a": ["1-0", "2-0", "3-0", "4-0"]])
        #expect(rig.spool.isEmpty)
        s = rig.stats.snapshot
        #expect(s.counters.written == 2 && s.replayed == 2 && s.batches == 1)
        #expect(rig.router.breaker.consecutiveFailures == 0)
    }

    /// Redis refuses two XADDs of a batch (OOM) and takes the others: the row goes, the refused
    /// records wait in the buffer's `requeued` table for new IDs (the encode stage's next batch),
    /// and only they are sent again, after the records Redis took.
    @Test func refusedRecordsAreRequeuedAndRetriedAcceptedOnesAreNotResent() throws {
        let rig = try RouterRig()
        let oom = "OOM command not allowed when used memory > 'maxmemory'."
        rig.redis.replies = [.refuse(["2-0", "4-0"], message: oom)]
        try rig.produce(xadds("a", 1...5))
        let settled = rig.router.finishOldest()
        #expect(!settled)
        rig.router.flushAcknowledgements()
        #expect(rig.redis.streams == ["a": ["1-0", "3-0", "5-0"]])
        #expect(rig.spool.totals.batches == 0)
        #expect(rig.spool.hasRequeued && rig.spool.requeuedRecords == 2)
        let requeued = try rig.spool.requeued()
        #expect(requeued.count == 1)
        let moved = try #require(requeued.first?.batch)
        #expect((0..<moved.commandCount).map { ScriptedRedis.id(moved, $0) } == ["2-0", "4-0"])
        #expect(rig.stats.snapshot.lastError == oom && rig.router.breaker.consecutiveFailures == 1)

        // The encode stage: new IDs, minted after every ID given before, in a batch of their own.
        var minter = try StreamIDMinter(path: nil)
        minter.observe(key: Array("a".utf8), id: StreamID(ms: 5, seq: 0))
        let (reminted, count) = EncodedBatch.reminting(requeued.map(\.batch), minter: &minter)
        #expect(count == 2)
        let id = try #require(try rig.spool.append(reminted, now: rig.clock.wallNow(), consuming: requeued.map(\.id)).id)
        rig.router.handle(HandedBatch(id: id, batch: reminted))
        rig.router.drainInFlight()
        rig.router.flushAcknowledgements()
        #expect(rig.redis.wire == [["a 1-0", "a 2-0", "a 3-0", "a 4-0", "a 5-0"], ["a 5-1", "a 5-2"]])
        #expect(rig.redis.streams == ["a": ["1-0", "3-0", "5-0", "5-1", "5-2"]])
        #expect(rig.spool.isEmpty && !rig.spool.hasRequeued)
        #expect(rig.stats.snapshot.counters.written == 5 && rig.router.breaker.consecutiveFailures == 0)
    }

    /// A record Redis rejects for good (WRONGTYPE) is counted and kept per key for status, never
    /// sent again; the rest of the batch is delivered and the breaker does not count a failure.
    @Test func aRecordRejectedForGoodIsCountedAndNotSentAgain() throws {
        let rig = try RouterRig()
        rig.redis.replies = [.reject(["2-0"], message: "WRONGTYPE Operation against a key holding the wrong kind of value")]
        try rig.produce(xadds("a", 1...3))
        let settled = rig.router.finishOldest()
        #expect(settled)
        rig.router.flushAcknowledgements()
        #expect(rig.spool.isEmpty && !rig.router.replayPending)
        #expect(rig.redis.streams == ["a": ["1-0", "3-0"]])
        let s = rig.stats.snapshot
        #expect(s.counters.written == 2 && s.counters.rejected == 1 && s.failedAttempts == 0 && s.batches == 1)
        #expect(rig.router.breaker.consecutiveFailures == 0)
        let status = try #require(try SpoolStatus.read(directory: rig.dir))
        #expect(status.rejected.map(\.key) == ["a"] && status.rejected.first?.records == 1)
        #expect(status.rejected.first?.reply.hasPrefix("WRONGTYPE") == true)
    }

    // MARK: the breaker

    /// closed → open after `failure_threshold` failures; open → half-open once the cool-down has
    /// passed on the clock (not a nanosecond before); a failed PING opens it again with twice the
    /// cool-down; a PING and a batch that succeed close it. Nothing is sent while it is open.
    @Test func breakerOpensAfterTheThresholdProbesAfterTheCoolDownAndCloses() throws {
        var settings = RouterSettings()
        settings.breaker.failureThreshold = 3
        settings.breaker.openTimeout = 2 * second
        let rig = try RouterRig(settings)
        rig.redis.replies = [.connectionLost(after: 0), .connectionLost(after: 0), .connectionLost(after: 0)]
        try rig.produce(xadds("a", 1...2))
        rig.router.finishOldest()
        #expect(rig.router.breaker.state == .closed && rig.router.breaker.consecutiveFailures == 1)
        rig.replayAll(steps: 1)
        #expect(rig.router.breaker.state == .closed && rig.router.breaker.consecutiveFailures == 2)
        let opened = rig.clock.now()
        rig.replayAll(steps: 1)
        #expect(rig.router.breaker.state == .open && rig.router.breaker.consecutiveFailures == 3)
        #expect(rig.router.breaker.retryAt == opened + 2 * second && rig.router.breaker.outageSince == opened)
        #expect(rig.stats.snapshot.failedAttempts == 3 && rig.redis.wire.count == 3 && rig.rowsLeft == 2)
        #expect(rig.log.all.contains("notice circuit breaker open"), "\(rig.log.all)")

        // Open: a new batch waits, and no replay step sends anything before the cool-down is over.
        try rig.produce(xadds("a", 3...3))
        #expect(rig.redis.wire.count == 3 && rig.rowsLeft == 3)
        rig.clock.advance(2 * second - 1)
        #expect(!rig.router.replayDue())
        rig.router.replayStep()
        #expect(rig.router.breaker.state == .open && rig.redis.wire.count == 3 && rig.redis.pingCount == 0)

        // The cool-down is over: half-open, PING first; it fails: open again, for twice as long.
        rig.clock.advance(1)
        #expect(rig.router.replayDue())
        rig.redis.pings = ["connection error: 127.0.0.1:6379/0: Connection refused"]
        rig.router.replayStep()
        #expect(rig.redis.pingCount == 1 && rig.redis.wire.count == 3)
        #expect(rig.router.breaker.state == .open && rig.router.breaker.retryAt == rig.clock.now() + 4 * second)
        #expect(rig.router.breaker.outageSince == opened)

        // Next probe: the PING is answered and a batch goes out; half-open until its replies say
        // Redis took it, then closed; the backlog drains in order.
        rig.clock.advance(4 * second)
        rig.router.replayStep()
        #expect(rig.redis.pingCount == 2 && rig.redis.wire.count == 5)
        #expect(rig.router.breaker.state == .halfOpen)
        rig.router.drainInFlight()
        #expect(rig.router.breaker.state == .closed && rig.router.breaker.consecutiveFailures == 0)
        #expect(rig.router.breaker.outageSince == nil && rig.router.breaker.since == rig.clock.now())
        rig.replayAll()
        #expect(rig.redis.streams == ["a": ["1-0", "2-0", "3-0"]] && rig.spool.isEmpty)
        #expect(rig.log.all.contains("notice circuit breaker closed") && rig.log.all.contains("notice Redis is taking writes again"))
    }

    /// Half-open, a batch that fails after a good PING opens the breaker again at once (whatever
    /// the threshold), with the doubled cool-down.
    @Test func aFailureWhileHalfOpenReopensTheBreaker() throws {
        let rig = try RouterRig.openedByOneFailure()
        #expect(rig.router.breaker.state == .open && rig.router.breaker.retryAt == rig.clock.now() + second)
        rig.clock.advance(second)
        rig.redis.replies = [.connectionLost(after: 0)]
        rig.router.replayStep()
        #expect(rig.router.breaker.state == .halfOpen && rig.redis.pingCount == 1)
        rig.router.drainInFlight()
        #expect(rig.router.breaker.state == .open && rig.router.breaker.retryAt == rig.clock.now() + 2 * second)
        #expect(rig.router.breaker.consecutiveFailures == 2 && rig.redis.streams.isEmpty && rig.rowsLeft == 1)
    }

    /// Refused credentials open the breaker at once, whatever the threshold, and say how to fix it.
    @Test func refusedCredentialsOpenTheBreakerAtOnce() throws {
        var settings = RouterSettings()
        settings.breaker.failureThreshold = 5
        let rig = try RouterRig(settings)
        rig.redis.replies = [.wrongPassword]
        try rig.produce(xadds("a", 1...2))
        let settled = rig.router.finishOldest()
        #expect(!settled)
        #expect(rig.router.breaker.state == .open && rig.router.breaker.consecutiveFailures == 1)
        #expect(rig.router.credentialsFailing && rig.rowsLeft == 2)
        #expect(rig.stats.snapshot.lastError == ScriptedRedis.credentialsError)
        #expect(rig.log.all.contains { $0.hasPrefix("error Redis refused this agent's credentials or ACL") }, "\(rig.log.all)")
    }

    /// Redis comes back wanting a password while the breaker is open: the failed probe's error is
    /// the latest error (with its time), the credentials are named at once, and status's state says
    /// so (as a failed write would).
    @Test func aProbeRefusedForCredentialsIsNamedAndBecomesTheLastError() throws {
        let rig = try RouterRig.openedByOneFailure()
        #expect(rig.router.breaker.state == .open && !rig.router.credentialsFailing)
        let firstError = rig.stats.snapshot.lastError
        let firstAt = rig.stats.snapshot.lastErrorAt
        rig.clock.advance(second)
        rig.redis.pings = [ScriptedRedis.credentialsError]
        rig.router.replayStep()
        #expect(rig.redis.pingCount == 1 && rig.router.breaker.state == .open)
        #expect(rig.router.credentialsFailing)
        #expect(rig.stats.snapshot.lastError == ScriptedRedis.credentialsError && rig.stats.snapshot.lastError != firstError)
        #expect(rig.stats.snapshot.lastErrorAt != firstAt && rig.stats.snapshot.failedAttempts == 2)
        #expect(rig.log.all.contains { $0.hasPrefix("error Redis refused this agent's credentials or ACL") }, "\(rig.log.all)")
        #expect(rig.router.stateDirty)
    }

    // MARK: replay pacing

    /// `replay_rate` = 60 records/s with chunks of 30 (`replay_batch_size`): a chunk every half
    /// second of the clock, no sooner, whatever how often the send loop asks.
    @Test func replayRateIsHonouredAsTheClockAdvances() throws {
        var settings = RouterSettings()
        settings.batchSize = 10
        settings.replayBatchSize = 30
        settings.replayRate = 60
        let rig = try RouterRig(settings, backlog: (0..<9).map { xadds("a", ($0 * 10 + 1)...($0 * 10 + 10)) })
        let start = rig.clock.now()
        var sentAt: [Int64: Int] = [:]
        // The send loop's ticks: every 10 ms for 2 s.
        for _ in 0..<200 {
            if rig.router.replayPending, rig.router.replayDue() {
                let before = rig.redis.wire.count
                rig.router.replayStep()
                rig.router.drainInFlight()
                rig.router.flushAcknowledgements()
                sentAt[rig.clock.now() - start] = rig.redis.wire[before...].reduce(0) { $0 + $1.count }
            }
            rig.clock.advance(10_000_000)
        }
        #expect(sentAt == [0: 30, second / 2: 30, second: 30], "\(sentAt)")
        #expect(rig.router.replayBudgetAt == start + second + second / 2)
        #expect(rig.spool.isEmpty && rig.stats.snapshot.replayed == 90)
        #expect(rig.redis.streams["a"] == (1...90).map { "\($0)-0" })
    }

    /// Not due until the budget of the last chunk is spent: a step asked for early sends nothing.
    @Test func aReplayStepBeforeTheBudgetIsSpentSendsNothing() throws {
        var settings = RouterSettings()
        settings.batchSize = 10
        settings.replayBatchSize = 20
        settings.replayRate = 10
        let rig = try RouterRig(settings, backlog: (0..<4).map { xadds("a", ($0 * 10 + 1)...($0 * 10 + 10)) })
        #expect(rig.replayAll(steps: 1) == [20])
        // 20 records at 10 records/s: the next chunk after 2 s.
        #expect(rig.router.replayBudgetAt == rig.clock.now() + 2 * second)
        rig.clock.advance(2 * second - 1)
        #expect(!rig.router.replayDue())
        rig.router.replayStep()
        #expect(rig.redis.wire.count == 2 && rig.rowsLeft == 20)
        rig.clock.advance(1)
        #expect(rig.router.replayDue())
        #expect(rig.replayAll(steps: 1) == [20])
        #expect(rig.spool.isEmpty)
    }

    /// `replay_batch_size` = 25 over rows of 10, 10, 10, 40 and 5 records: a step sends whole rows
    /// up to 25 records (20, then 10), a row bigger than that goes alone (40), then the last (5).
    /// Without `replay_rate`, steps follow one another with no wait.
    @Test func replayGoesInChunksOfReplayBatchSize() throws {
        var settings = RouterSettings()
        settings.batchSize = 10
        settings.replayBatchSize = 25
        let rows = [xadds("a", 1...10), xadds("a", 11...20), xadds("a", 21...30), xadds("a", 31...70), xadds("a", 71...75)]
        let rig = try RouterRig(settings, backlog: rows)
        #expect(rig.replayAll() == [20, 10, 40, 5])
        #expect(rig.redis.wire.map(\.count) == [10, 10, 10, 40, 5])
        #expect(rig.router.replayBudgetAt == 0)
        #expect(rig.redis.streams["a"] == (1...75).map { "\($0)-0" })
        #expect(rig.spool.isEmpty && rig.stats.snapshot.replayed == 75)
    }

    // MARK: the state saved for status

    /// What the router saves for `status`, typed: the breaker (since the outage began, on the wall
    /// clock), the counters, this run's last error and its kind. What it does not know stays as
    /// saved before: the run's backlog at its start, and an earlier run's last error until this run
    /// has one of its own.
    /// The agent restarts during an outage (the previous run's breaker open since T, no write since):
    /// once this run's breaker opens, the outage and its failures still count from T (a restart
    /// does not start critical_open's clock again); a write that succeeds ends it.
    @Test func anOutageGoingOnAtARestartKeepsItsStart() throws {
        var before = AgentState()
        let outageStart = ManualClock().wallNow() - 60 * second
        before.breaker = AgentState.Breaker(state: .open, sinceNs: outageStart, consecutiveFailures: 7)
        before.lastError = AgentState.LastError(message: "Connection refused", kind: .transient, atNs: outageStart + 30 * second,
                                                firstFailureNs: outageStart - 2 * second, run: "1-1")
        before.lastSuccessNs = outageStart - 3 * second
        var settings = RouterSettings()
        settings.breaker.failureThreshold = 1
        let rig = try RouterRig(settings, state: before)
        rig.redis.replies = [.connectionLost(after: 0)]
        try rig.produce(xadds("a", 1...1))
        rig.router.finishOldest()
        #expect(rig.router.breaker.state == .open)
        rig.router.saveState(force: true)
        var saved = try rig.spool.readState()
        #expect(saved.breaker.state == .open && saved.breaker.sinceNs == outageStart)
        #expect(saved.lastError?.firstFailureNs == outageStart - 2 * second && saved.lastError?.run == AgentRun.id)
        // Redis is back: the outage is over, and the next one counts from its own start.
        rig.clock.advance(second)
        rig.replayAll()
        #expect(rig.router.breaker.state == .closed && rig.spool.isEmpty)
        rig.redis.replies = [.connectionLost(after: 0)]
        rig.clock.advance(second)
        let secondOutage = rig.clock.wallNow()
        try rig.produce(xadds("a", 2...2))
        rig.router.finishOldest()
        rig.router.saveState(force: true)
        saved = try rig.spool.readState()
        #expect(saved.breaker.state == .open && saved.breaker.sinceNs == secondOutage)
        #expect(saved.lastError?.firstFailureNs == secondOutage)
    }

    @Test func theSavedStateKeepsWhatTheRouterDoesNotKnow() throws {
        var before = AgentState()
        before.counters.backlogAtStart = 7
        before.lastError = AgentState.LastError(message: "Connection reset by peer", kind: .transient, atNs: 100, firstFailureNs: 90, run: "1-1")
        before.run = AgentState.Run(id: AgentRun.id, startedNs: AgentRun.startedNs)
        var settings = RouterSettings()
        settings.breaker.failureThreshold = 2
        let rig = try RouterRig(settings, state: before)
        rig.upstream.collected = 9
        rig.upstream.queueDropped = 1
        rig.upstream.inputErrors = 4
        rig.upstream.inputFigures = [InputFigures(input: "cpu", at: "agent.toml:3")]
        try rig.produce(xadds("a", 1...2))
        rig.router.drainInFlight()
        rig.router.flushAcknowledgements()
        rig.router.saveState(force: true)
        var saved = try rig.spool.readState()
        #expect(saved.counters.backlogAtStart == 7 && saved.counters.written == 2 && saved.counters.collected == 9)
        #expect(saved.counters.dropped == 1 && saved.counters.inputErrors == 4 && saved.inputs.map(\.input) == ["cpu"])
        #expect(saved.lastError == before.lastError, "an earlier run's error stays until this run has one")
        #expect(saved.lastSuccessNs == rig.clock.wallNow() && saved.updatedNs == rig.clock.wallNow())
        #expect(saved.breaker == AgentState.Breaker(state: .closed, sinceNs: rig.clock.wallNow() - (rig.clock.now() - rig.router.breaker.since)))
        #expect(saved.pid == getpid() && saved.run == before.run && saved.replayRate == 0)

        // An outage: two failures open the breaker; the error is this run's, and so is its start.
        let outageAt = rig.clock.wallNow() + second
        rig.clock.advance(second)
        rig.redis.replies = [.connectionLost(after: 0), .connectionLost(after: 0)]
        try rig.produce(xadds("a", 3...3))
        rig.router.finishOldest()
        rig.clock.advance(second)
        rig.replayAll(steps: 1)
        #expect(rig.router.breaker.state == .open)
        rig.clock.advance(3 * second)
        rig.router.saveState(force: false)
        saved = try rig.spool.readState()
        #expect(saved.breaker == AgentState.Breaker(state: .open, sinceNs: outageAt + second, consecutiveFailures: 2))
        #expect(saved.lastError == AgentState.LastError(message: ScriptedRedis.connectionError, kind: .transient, atNs: outageAt + second,
                                                        firstFailureNs: outageAt, run: AgentRun.id))
        #expect(saved.counters.spilled == 1 && saved.updatedNs == rig.clock.wallNow())

        // Refused credentials: the kind says so (status --check: CRITICAL).
        rig.redis.replies = [.wrongPassword]
        rig.clock.advance(60 * second)
        rig.replayAll(steps: 1)
        rig.router.saveState(force: false)
        saved = try rig.spool.readState()
        #expect(saved.lastError?.kind == .auth && saved.lastError?.message == ScriptedRedis.credentialsError)
        #expect(saved.breaker.state == .open && saved.breaker.sinceNs == outageAt + second)
    }
}

import Logging
import RedisSink
import SpillwayBatch
import SpillwayConfig
import SpillwayCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Tells a worker to stop after its round (SIGTERM, SIGINT, a test).
public final class StopSignal: Sendable {
    private let flag = Atomic<Bool>(false)
    public init() {}
    public func stop() { flag.store(true, ordering: .releasing) }
    public var isStopped: Bool { flag.load(ordering: .acquiring) }
}

/// What a worker did (its `aggregate` log line).
public struct AggregateCounters: Sendable, Equatable {
    /// Entries read (XREADGROUP `>`).
    public var read = 0
    /// Own pending entries read again (after a restart or an error).
    public var reread = 0
    /// Entries claimed from other consumers (XAUTOCLAIM).
    public var claimed = 0
    /// Entries acknowledged with their partial figures.
    public var committed = 0
    /// Pending entries found deleted from the stream (trimmed): acknowledged without values.
    public var deleted = 0
    /// Commits refused because an entry was no longer pending with this worker (claimed by another).
    public var fenced = 0
    /// Buckets whose figures were written.
    public var finalized = 0
    /// Bucket writes given up because a bucket changed meanwhile (done again later).
    public var conflicts = 0
    /// Commits that found this worker's figures of a bucket merged away (the bucket written
    /// meanwhile, or its state expired): those figures started afresh and the commit was made again.
    public var stale = 0
    /// Buckets whose figures this worker let go of (more than `max_open_buckets` held): their next
    /// entries start a new field in the bucket's hash.
    public var evicted = 0
    /// Samples written (TS.ADD).
    public var samples = 0
    /// Samples Redis refused (a key of another type, older than the retention).
    public var rejected = 0
    /// Buckets merged with their figures read back (late entries after their state expired).
    public var lookups = 0
    /// Rounds that failed (Redis down, an error reply); each is retried.
    public var errors = 0
    /// Buckets waiting to close (all workers of the group), at the last look.
    public var openBuckets = 0
    /// Streams read.
    public var streams = 0
    /// Reading is paused: `max_open_buckets` reached.
    public var paused = false
}

/// Why a round failed.
public enum AggregateError: Error, Sendable, CustomStringConvertible {
    /// The connection (down, timeout, refused credentials): retried.
    case redis(RedisError)
    /// An error reply nothing here handles (LOADING, OOM, NOPERM, …): retried.
    case reply(String, command: String)
    /// Cannot work with this Redis at all (no RedisTimeSeries): the worker stops.
    case fatal(String)

    public var description: String {
        switch self {
        case .redis(let e): "\(e)"
        case .reply(let m, let c): "\(c): \(m)"
        case .fatal(let m): m
        }
    }
}

/// `spillway aggregate`: one worker of the consumer group. See README "Aggregates" for the design;
/// in short:
/// - it reads entries of the streams through the group (each entry goes to one worker), folds
///   each into the figures (count, min, max, exact sum per field and tag set) of its bucket, and
///   commits them after each read, in one Lua script per stream: fenced (every entry still pending
///   with this worker), this worker's field of each bucket's hash set to its figures of every
///   entry it committed there, the bucket put in the due set at its close time, the entries
///   acknowledged. Nothing is acknowledged before its figures are in Redis, and nothing is counted
///   twice (an acknowledged entry is no longer pending; a field merged away is started afresh).
/// - a bucket due (its end plus `grace` passed, on Redis's clock) is written by whichever worker
///   gets to it: its hash is watched and read, its partials merged (exactly: the merge does not
///   depend on how entries were spread), and in one MULTI/EXEC its five figures per series are
///   written (TS.ADD … ON_DUPLICATE LAST), its fields replaced by their merge (kept `keep`, for
///   late entries), and it leaves the due set. A commit made meanwhile aborts the EXEC, and the
///   bucket is written again with it.
/// - entries pending with a worker that died are claimed past `claim_idle`; a worker restarted
///   with its name reads its own pending entries first.
///
/// Blocking (RedisConnection): run it on a thread of its own.
public final class AggregateWorker {
    public let config: AggregateConfig
    public let consumer: String
    public private(set) var counters = AggregateCounters()
    let connection: RedisConnection
    let logger: Logger
    let stopSignal: StopSignal
    let keys: SeriesKeys
    /// The group's state keys (`AggregateConfig`'s, kept: they are used at every round).
    let dueKey: String
    /// The group's bucket lengths, and the prefix of its per-length markers (`Scripts.markBuckets`).
    let bucketsKey: String
    let sincePrefix: String
    let runID: String

    /// Streams read, in the order they are read in turn.
    private(set) var streams: [String] = []
    private var info: [String: StreamInfo] = [:]
    private var cursor = 0
    private var emptyStreamsInARow = 0
    /// Streams whose pending entries with this consumer must be read again (at the start, after an
    /// error or a fenced commit: what was held is gone).
    var reread: Set<String> = []
    private var claimCursors: [String: String] = [:]
    private var nextScan: Int64 = 0
    private var nextClaim: Int64 = 0
    private var nextPrune: Int64 = 0
    private var partialSeq: UInt64 = 0
    /// This worker's figures of each bucket it committed to and that is still open: the field it
    /// keeps in the bucket's hash, rewritten whole at each commit.
    var accs: [AccKey: Acc] = [:]
    private var useCounter: UInt64 = 0
    private var lastRedisNow: Int64 = 0
    private var nextAccSweep: Int64 = 0
    private var lastEvictionLog: Int64 = 0
    private var checked = false
    /// Whether `markBuckets` ran (once, after the first scan).
    private var marked = false
    /// Whether every group this worker's scans asked for was created by it (none existed before).
    private var createdEveryGroup = true
    private var unmatched: Set<String> = []
    private var pausedSince: Int64?

    /// How long after its last late partial a bucket closed already is written: `grace`, at least 1s.
    var settleMs: Int64 { max(config.graceMs, 1000) }
    /// Streams per XREADGROUP: `batch / count`.
    var streamsPerRead: Int { max(1, config.batch / config.count) }
    /// Buckets one finalizing pass looks at.
    static let finalizeChunk = 16
    /// Series one MULTI/EXEC writes at most (five samples each).
    static let seriesPerWrite = 4000

    public init(config: AggregateConfig, redis: RedisOutputConfig, consumer: String? = nil, logger: Logger, stop: StopSignal) {
        self.config = config
        self.consumer = consumer ?? config.consumer
        var options = RedisConnectionOptions(endpoint: redis.endpoint)
        options.connectTimeout = redis.connectTimeout
        options.timeout = redis.timeout
        options.keepalive = redis.keepalive
        options.tls = redis.tls
        connection = RedisConnection(options: options)
        self.logger = logger
        stopSignal = stop
        keys = SeriesKeys(template: config.key)
        dueKey = config.dueKey
        bucketsKey = config.bucketsKey
        sincePrefix = config.sincePrefix
        var rng = SystemRandomNumberGenerator()
        runID = String(rng.next() as UInt64, radix: 36)
    }

    // MARK: - The loop

    /// Rounds until stopped; Redis errors are logged and retried with a backoff (never thrown).
    /// Throws only `.fatal` (a Redis it cannot work with).
    public func run() throws(AggregateError) {
        logger.info("aggregate worker starting", metadata: [
            "aggregate.group": "\(config.group)", "aggregate.consumer": "\(consumer)", "aggregate.streams": "\(config.streams)",
            "aggregate.buckets": "\(config.buckets.map(\.text).joined(separator: ","))", "aggregate.grace": "\(Units.formatDuration(config.graceMs * 1_000_000))",
            "redis.url": "\(connection.options.endpoint.display)",
        ])
        var backoffMs: Int64 = 0
        var failures = 0
        var lastErrorLog: Int64 = 0
        var lastStats = monotonicNanoseconds()
        var logged = counters
        while !stopSignal.isStopped {
            do throws(AggregateError) {
                let busy = try round()
                if failures > 0 {
                    logger.info("Redis answers again", metadata: ["aggregate.failed_rounds": "\(failures)"])
                    failures = 0
                    backoffMs = 0
                }
                if !busy { pause(ms: config.pollIntervalMs) }
            } catch {
                if case .fatal = error { throw error }
                counters.errors += 1
                failures += 1
                dropHeld()
                backoffMs = min(5_000, max(100, backoffMs * 2))
                let now = monotonicNanoseconds()
                if failures == 1 || now - lastErrorLog >= 30_000_000_000 {
                    lastErrorLog = now
                    var meta: Logger.Metadata = ["error": "\(error)", "aggregate.retry_in": "\(backoffMs)ms", "aggregate.failed_rounds": "\(failures)"]
                    if ReplyErrorKind.isCredentials(error.description) {
                        meta["fix"] = "check [outputs.redis] password/password_file and username, and the ACL: the worker uses XREADGROUP, XAUTOCLAIM, EVAL, TS.ADD, TS.RANGE, SCAN, WATCH/MULTI/EXEC"
                    }
                    if failures == 1 {
                        logger.error("aggregate round failed; retrying", metadata: meta)
                    } else {
                        logger.warning("aggregate round still failing; retrying", metadata: meta)
                    }
                }
                pause(ms: backoffMs)
            }
            let now = monotonicNanoseconds()
            if now - lastStats >= 10_000_000_000 {
                lastStats = now
                if counters != logged {
                    logged = counters
                    logger.info("aggregate", metadata: statsMetadata())
                }
            }
        }
        connection.close()
        logger.info("aggregate worker stopped", metadata: statsMetadata())
    }

    public func statsMetadata() -> Logger.Metadata {
        let c = counters
        return [
            "aggregate.read": "\(c.read)", "aggregate.reread": "\(c.reread)", "aggregate.claimed": "\(c.claimed)",
            "aggregate.committed": "\(c.committed)", "aggregate.deleted": "\(c.deleted)", "aggregate.fenced": "\(c.fenced)",
            "aggregate.finalized": "\(c.finalized)", "aggregate.conflicts": "\(c.conflicts)", "aggregate.samples": "\(c.samples)",
            "aggregate.stale": "\(c.stale)", "aggregate.evicted": "\(c.evicted)", "aggregate.held_buckets": "\(accs.count)",
            "aggregate.rejected": "\(c.rejected)", "aggregate.lookups": "\(c.lookups)", "aggregate.errors": "\(c.errors)",
            "aggregate.open_buckets": "\(c.openBuckets)", "aggregate.streams": "\(c.streams)", "aggregate.paused": "\(c.paused)",
        ]
    }

    /// Sleeps `ms`, or less when stopped meanwhile.
    func pause(ms: Int64) {
        let end = monotonicNanoseconds() + ms * 1_000_000
        while !stopSignal.isStopped {
            let left = end - monotonicNanoseconds()
            if left <= 0 { return }
            usleep(UInt32(min(left / 1000, 50_000)))
        }
    }

    /// After an error nothing held is known to be committed or not: it is dropped (it is all still
    /// pending with this consumer, or committed) and every stream's own pending entries are read again.
    func dropHeld() {
        connection.close()
        reread.formUnion(streams)
        // Whether the last commits were made is not known: their fields are left as they are, and
        // the figures start afresh under new fields.
        accs.removeAll()
    }

    /// One round: look for streams when due, read own pending entries when needed, claim idle
    /// entries when due, read new entries and commit them, write the buckets that are due.
    /// Returns whether there may be more to do at once (else the loop waits `poll_interval`).
    @discardableResult
    public func round() throws(AggregateError) -> Bool {
        if !checked { try checkServer() }
        let t = monotonicNanoseconds()
        if t >= nextScan {
            try scan()
            nextScan = t + config.scanIntervalMs * 1_000_000
        }
        if !marked { try markBuckets() }
        if !reread.isEmpty { try rereadPending() }
        if t >= nextClaim {
            let more = try claim()
            nextClaim = more ? t : t + max(1_000, min(config.claimIdleMs / 2, 30_000)) * 1_000_000
        }
        if t >= nextPrune {
            try prune()
            nextPrune = t + 600_000_000_000
        }
        let head = try pipeline([RedisCommand(["TIME"]), RedisCommand(["ZCARD", dueKey])], "TIME")
        guard case .array(let time) = head[0], time.count == 2, let s = time[0].string.flatMap({ Int64($0) }),
              let us = time[1].string.flatMap({ Int64($0) }), case .integer(let open) = head[1] else {
            throw .reply("unexpected reply \(head)", command: "TIME/ZCARD")
        }
        let now = s * 1000 + us / 1000
        lastRedisNow = now
        counters.openBuckets = Int(open)
        var busy = false
        if open >= config.maxOpenBuckets {
            if pausedSince == nil {
                pausedSince = t
                logger.error("open buckets reached max_open_buckets: reading paused until buckets close", metadata: [
                    "aggregate.open_buckets": "\(open)", "aggregate.max_open_buckets": "\(config.maxOpenBuckets)",
                    "fix": "raise [aggregate] max_open_buckets, or lower grace; buckets far in the future (a host's clock ahead) close only then",
                ])
            }
            counters.paused = true
        } else {
            if let since = pausedSince {
                logger.notice("reading resumed", metadata: ["aggregate.open_buckets": "\(open)", "aggregate.paused_for": "\(Units.formatDuration(t - since))"])
                pausedSince = nil
            }
            counters.paused = false
            busy = try readRound()
        }
        let more = try finalize(now: now)
        trimAccs(t)
        return busy || more
    }

    /// Lets go of this worker's figures of buckets closed (and settled) — a later entry of one
    /// starts a new field — and, beyond `max_open_buckets`, of the least recently used.
    func trimAccs(_ t: Int64) {
        if t >= nextAccSweep {
            nextAccSweep = t + 1_000_000_000
            let horizon = lastRedisNow - settleMs
            accs = accs.filter { $0.value.closeMs >= horizon }
        }
        guard accs.count > config.maxOpenBuckets else { return }
        let keep = max(1, config.maxOpenBuckets * 9 / 10)
        let drop = accs.count - keep
        let oldest = accs.sorted { $0.value.used < $1.value.used }.prefix(drop).map(\.key)
        for k in oldest { accs[k] = nil }
        counters.evicted += drop
        if t - lastEvictionLog >= 60_000_000_000 {
            lastEvictionLog = t
            logger.warning("more open buckets than max_open_buckets held: the least recently used let go (their next entries start new fields)", metadata: [
                "aggregate.max_open_buckets": "\(config.maxOpenBuckets)", "aggregate.evicted": "\(counters.evicted)",
                "fix": "raise [aggregate] max_open_buckets (memory: the figures of each open bucket's tag sets and fields)",
            ])
        }
    }

    // MARK: - Redis

    func pipeline(_ commands: [RedisCommand], _ what: String) throws(AggregateError) -> [RedisReply] {
        let (replies, error) = connection.pipeline(commands)
        if let error { throw .redis(error) }
        guard replies.count == commands.count else { throw .reply("\(replies.count) replies to \(commands.count) commands", command: what) }
        return replies
    }

    /// The server has what the worker uses: RedisTimeSeries (TS.ADD) and XAUTOCLAIM (Redis 6.2).
    func checkServer() throws(AggregateError) {
        let reply = try pipeline([RedisCommand(["COMMAND", "INFO", "TS.ADD", "XAUTOCLAIM"])], "COMMAND INFO")[0]
        if case .array(let infos) = reply, infos.count == 2 {
            if infos[0] == .null {
                throw .fatal("Redis at \(connection.options.endpoint.display) has no RedisTimeSeries (TS.ADD is unknown): aggregate writes its figures as timeseries; load the module (redis-stack, or loadmodule redistimeseries.so)")
            }
            if infos[1] == .null {
                throw .fatal("Redis at \(connection.options.endpoint.display) has no XAUTOCLAIM: aggregate needs Redis 6.2 or later")
            }
        }
        // (An error reply, e.g. COMMAND not allowed by the ACL: the commands themselves will tell.)
        checked = true
    }

    // MARK: - Streams

    func hashKey(_ stream: String, _ bucket: AggregateConfig.Bucket, _ start: Int64) -> String {
        config.bucketStateKey(bucketMs: bucket.ms, start: start, stream: stream)
    }

    /// SCAN for the streams of the pattern: new ones get the group (created at the stream's
    /// start) and are read; streams gone are forgotten.
    func scan() throws(AggregateError) {
        var scanCursor = "0"
        var seen = Set<String>()
        var calls = 0
        repeat {
            let reply = try pipeline([RedisCommand(["SCAN", scanCursor, "MATCH", config.streams, "COUNT", "1000", "TYPE", "stream"])], "SCAN")[0]
            guard case .array(let parts) = reply, parts.count == 2, let next = parts[0].string, case .array(let found) = parts[1] else {
                throw .reply(reply.string ?? "unexpected reply", command: "SCAN")
            }
            for k in found { if let s = k.string { seen.insert(s) } }
            scanCursor = next
            calls += 1
        } while scanCursor != "0" && calls < 1_000_000 && !stopSignal.isStopped
        let complete = scanCursor == "0"
        // (A scan cut short may have missed streams whose group exists already.)
        if !complete { createdEveryGroup = false }
        var added: [String] = []
        for key in seen.sorted() where info[key] == nil {
            guard let si = StreamInfo(key: key, template: config.streamKey) else {
                if unmatched.insert(key).inserted {
                    logger.warning("stream not read: its key is not of stream_key", metadata: [
                        "redis.key": "\(key)", "aggregate.stream_key": "\(config.streamKey.text)",
                        "fix": "narrow [aggregate] streams, or set stream_key to the template it was written with",
                    ])
                }
                continue
            }
            info[key] = si
            added.append(key)
        }
        if !added.isEmpty {
            try createGroups(added)
            streams += added.filter { info[$0] != nil }
            for k in added where info[k] != nil { reread.insert(k) }
            logger.info("streams found", metadata: ["aggregate.new_streams": "\(added.count)", "aggregate.streams": "\(streams.count)"])
        }
        if complete {
            let gone = streams.filter { !seen.contains($0) }
            for key in gone { forget(key) }
        }
        counters.streams = streams.count
    }

    /// Since when the group buckets at each of this worker's lengths (`Scripts.markBuckets`), once,
    /// after the first scan and before anything is read.
    func markBuckets() throws(AggregateError) {
        let reply = try pipeline([RedisCommand(["EVAL", Scripts.markBuckets, "2", bucketsKey, sincePrefix, createdEveryGroup ? "1" : "0"]
                                                   + config.buckets.map(\.text))], "EVAL markBuckets")[0]
        if case .error(let message) = reply { throw .reply(message, command: "EVAL markBuckets") }
        marked = true
    }

    /// XGROUP CREATE key group 0 MKSTREAM for each (an existing group is kept); a key that cannot
    /// have it is forgotten.
    func createGroups(_ list: [String]) throws(AggregateError) {
        let replies = try pipeline(list.map { RedisCommand(["XGROUP", "CREATE", $0, config.group, "0", "MKSTREAM"]) }, "XGROUP CREATE")
        for (key, reply) in zip(list, replies) {
            if case .error(let message) = reply, message.hasPrefix("BUSYGROUP") { createdEveryGroup = false }
            guard case .error(let message) = reply, !message.hasPrefix("BUSYGROUP") else { continue }
            if ReplyErrorKind.classify(message) != .permanent { throw .reply(message, command: "XGROUP CREATE \(key)") }
            logger.warning("stream not read: its group cannot be created", metadata: ["redis.key": "\(key)", "error": "\(message)"])
            forget(key)
        }
    }

    func forget(_ key: String) {
        info[key] = nil
        accs = accs.filter { $0.key.stream != key }
        reread.remove(key)
        claimCursors[key] = nil
        if let i = streams.firstIndex(of: key) {
            streams.remove(at: i)
            if cursor > i { cursor -= 1 }
        }
        if cursor >= streams.count { cursor = 0 }
        counters.streams = streams.count
    }

    /// After NOGROUP or WRONGTYPE on some of `list`: a key that is no stream any more is forgotten,
    /// a stream without the group gets it again.
    func verify(_ list: [String]) throws(AggregateError) {
        let types = try pipeline(list.map { RedisCommand(["TYPE", $0]) }, "TYPE")
        var recreate: [String] = []
        for (key, t) in zip(list, types) {
            if t.string == "stream" { recreate.append(key) } else { forget(key) }
        }
        if !recreate.isEmpty { try createGroups(recreate) }
    }

    // MARK: - Reading and committing

    struct BucketRef: Hashable {
        var bucket: Int
        var start: Int64
    }

    /// What was read from one stream and not committed yet. (Always from one reply: an XREADGROUP,
    /// an XAUTOCLAIM page or a page of own pending entries, so no entry is in it twice.)
    struct Held {
        var ids: [StreamID] = []
        var buckets: [BucketRef: BucketStats] = [:]
    }

    func fold(_ e: StreamEntry, into held: inout Held) {
        held.ids.append(e.id)
        if e.deleted {
            counters.deleted += 1
            return
        }
        guard !e.values.isEmpty else { return }
        for i in config.buckets.indices {
            let ref = BucketRef(bucket: i, start: bucketStart(e.timestampMs, config.buckets[i].ms))
            // In place: no copy of the bucket's or the tag set's figures.
            held.buckets[ref, default: BucketStats()].add(tags: e.tags, values: e.values)
        }
    }

    /// The entries of an entry list reply, folded; how many.
    @discardableResult
    func fold(entries reply: RedisReply, into held: inout Held) -> Int {
        guard case .array(let entries) = reply else { return 0 }
        var n = 0
        for r in entries {
            guard let e = StreamEntry(reply: r) else { continue }
            fold(e, into: &held)
            n += 1
        }
        return n
    }

    struct AccKey: Hashable {
        var stream: String
        var bucket: Int
        var start: Int64
    }

    /// This worker's figures of one bucket: its field in the bucket's hash and what it holds.
    struct Acc {
        var field: String
        var figures = BucketStats()
        /// The field was written (by a commit whose reply was read).
        var written = false
        var closeMs: Int64
        var used: UInt64 = 0
    }

    func newField() -> String {
        partialSeq += 1
        return "p:\(consumer):\(runID):\(partialSeq)"
    }

    /// The commit of `held` (one stream's entries), and the figures each bucket's field then holds.
    func commitCommand(_ stream: String, _ held: Held) -> (command: RedisCommand, accs: [(key: AccKey, acc: Acc)]) {
        var c = RedisCommand()
        c.append("EVAL")
        c.append(Scripts.commit)
        let refs = held.buckets.keys.sorted { ($0.bucket, $0.start) < ($1.bucket, $1.start) }
        c.append(Int64(2 + refs.count))
        c.append(stream)
        c.append(dueKey)
        for r in refs { c.append(hashKey(stream, config.buckets[r.bucket], r.start)) }
        c.append(config.group)
        c.append(consumer)
        c.append(settleMs)
        let ids = held.ids.sorted()
        c.append(Int64(ids.count))
        for id in ids { c.append(id) }
        useCounter += 1
        var touched: [(key: AccKey, acc: Acc)] = []
        for r in refs {
            let b = config.buckets[r.bucket]
            let close = r.start + b.ms + config.graceMs
            let key = AccKey(stream: stream, bucket: r.bucket, start: r.start)
            var acc = accs[key] ?? Acc(field: newField(), closeMs: close)
            acc.figures.merge(held.buckets[r]!)
            c.append(acc.field)
            c.append(acc.written ? "1" : "0")
            c.append(bytes: acc.figures.encoded())
            c.append(close)
            acc.written = true
            acc.used = useCounter
            touched.append((key, acc))
        }
        c.append(bucketsKey)
        c.append(sincePrefix)
        for b in config.buckets { c.append(b.text) }
        return (c, touched)
    }

    /// Commits what is held, one script per stream, in one pipeline. A fenced stream is read again;
    /// a stream whose group is gone is checked; a commit that found figures of this worker merged
    /// away is made again with them started afresh.
    func commit(_ held: [String: Held]) throws(AggregateError) {
        var list = held.keys.filter { !held[$0]!.ids.isEmpty }.sorted()
        for _ in 0..<3 {
            guard !list.isEmpty else { return }
            let built = list.map { commitCommand($0, held[$0]!) }
            let (replies, error) = connection.pipeline(built.map(\.command))
            var again: [String] = []
            var missing: [String] = []
            var failure: AggregateError?
            for (i, key) in list.enumerated() {
                let touched = built[i].accs
                // No reply (the connection broke): whether it was made is not known. Its entries
                // are read again (pending if it was not made), its buckets' figures start afresh.
                guard i < replies.count else {
                    for t in touched { accs[t.key] = nil }
                    reread.insert(key)
                    continue
                }
                switch replies[i] {
                case .integer(let n):
                    counters.committed += Int(n)
                    for t in touched { accs[t.key] = t.acc }
                case .error(let message) where message.hasPrefix("FENCED"):
                    // Nothing written: the figures held before stay right.
                    counters.fenced += 1
                    reread.insert(key)
                    logger.notice("commit fenced: entries were claimed by another worker; reading own pending entries again", metadata: ["redis.key": "\(key)", "error": "\(message)"])
                case .error(let message) where message.hasPrefix("STALE"):
                    // Nothing written. Those buckets' fields were merged away: start them afresh.
                    counters.stale += 1
                    for j in message.split(separator: " ").dropFirst().compactMap({ Int($0) }) where j >= 1 && j <= touched.count {
                        accs[touched[j - 1].key] = nil
                    }
                    again.append(key)
                case .error(let message) where message.hasPrefix("NOGROUP") || message.hasPrefix("WRONGTYPE"):
                    for t in touched { accs[t.key] = nil }
                    missing.append(key)
                case .error(let message):
                    for t in touched { accs[t.key] = nil }
                    reread.insert(key)
                    failure = failure ?? .reply(message, command: "EVAL commit \(key)")
                default:
                    for t in touched { accs[t.key] = nil }
                    reread.insert(key)
                    failure = failure ?? .reply("unexpected reply \(replies[i])", command: "EVAL commit \(key)")
                }
            }
            if let error { throw .redis(error) }
            if !missing.isEmpty { try verify(missing) }
            if let failure { throw failure }
            list = again
        }
        // Stale three times running (buckets written as fast as they are committed to): read again.
        reread.formUnion(list)
    }

    /// One XREADGROUP `>` over the next streams in turn, and its commit. Returns whether to go on
    /// at once (entries were read, or not every stream was looked at since the last entry).
    func readRound() throws(AggregateError) -> Bool {
        guard !streams.isEmpty else { return false }
        let n = min(streamsPerRead, streams.count)
        if cursor >= streams.count { cursor = 0 }
        var chunk: [String] = []
        for i in 0..<n { chunk.append(streams[(cursor + i) % streams.count]) }
        cursor = (cursor + n) % streams.count
        var c = RedisCommand(["XREADGROUP", "GROUP", config.group, consumer, "COUNT", String(config.count), "STREAMS"])
        for k in chunk { c.append(k) }
        for _ in chunk { c.append(">") }
        let reply = try pipeline([c], "XREADGROUP")[0]
        var held: [String: Held] = [:]
        var read = 0
        switch reply {
        case .null:
            break
        case .array(let perStream):
            for s in perStream {
                guard case .array(let pair) = s, pair.count == 2, let key = pair[0].string else { continue }
                read += fold(entries: pair[1], into: &held[key, default: Held()])
            }
        case .error(let message) where message.hasPrefix("NOGROUP") || message.hasPrefix("WRONGTYPE"):
            try verify(chunk)
            return true
        case .error(let message):
            throw .reply(message, command: "XREADGROUP")
        default:
            throw .reply("unexpected reply \(reply)", command: "XREADGROUP")
        }
        counters.read += read
        try commit(held)
        if read > 0 {
            emptyStreamsInARow = 0
            return true
        }
        emptyStreamsInARow += n
        if emptyStreamsInARow >= streams.count {
            emptyStreamsInARow = 0
            return false
        }
        return true
    }

    /// Reads this consumer's own pending entries of the streams in `reread` (XREADGROUP from 0) and
    /// commits them, page by page.
    func rereadPending() throws(AggregateError) {
        for key in reread.sorted() where !stopSignal.isStopped {
            reread.remove(key)
            guard info[key] != nil else { continue }
            var last = "0"
            for _ in 0..<100_000 {
                let reply = try pipeline([RedisCommand(["XREADGROUP", "GROUP", config.group, consumer, "COUNT", String(config.count), "STREAMS", key, last])], "XREADGROUP")[0]
                if case .error(let message) = reply {
                    if message.hasPrefix("NOGROUP") || message.hasPrefix("WRONGTYPE") {
                        try verify([key])
                        break
                    }
                    throw .reply(message, command: "XREADGROUP \(key) \(last)")
                }
                guard case .array(let perStream) = reply, case .array(let pair)? = perStream.first, pair.count == 2,
                      case .array(let entries) = pair[1], !entries.isEmpty else { break }
                var held: [String: Held] = [:]
                counters.reread += fold(entries: pair[1], into: &held[key, default: Held()])
                guard let lastID = held[key]?.ids.max() else { break }
                last = lastID.description
                try commit(held)
                if reread.contains(key) { break }  // fenced: read again from the start next round
            }
        }
    }

    /// One XAUTOCLAIM page per stream (entries pending past `claim_idle` with any consumer,
    /// itself included), committed. Returns whether there may be more to claim.
    func claim() throws(AggregateError) -> Bool {
        var more = false
        var start = 0
        let per = streamsPerRead
        while start < streams.count, !stopSignal.isStopped {
            let chunk = Array(streams[start..<min(streams.count, start + per)])
            start += per
            let replies = try pipeline(chunk.map {
                RedisCommand(["XAUTOCLAIM", $0, config.group, consumer, String(config.claimIdleMs), claimCursors[$0] ?? "0-0", "COUNT", String(config.count)])
            }, "XAUTOCLAIM")
            var held: [String: Held] = [:]
            var missing: [String] = []
            for (key, reply) in zip(chunk, replies) {
                switch reply {
                case .array(let parts) where parts.count >= 2:
                    let next = parts[0].string ?? "0-0"
                    claimCursors[key] = next
                    let n = fold(entries: parts[1], into: &held[key, default: Held()])
                    counters.claimed += n
                    if n > 0 || next != "0-0" { more = true }
                    if n > 0 {
                        logger.notice("claimed entries idle past claim_idle", metadata: ["redis.key": "\(key)", "aggregate.claimed": "\(n)"])
                    }
                case .error(let message) where message.hasPrefix("NOGROUP") || message.hasPrefix("WRONGTYPE"):
                    missing.append(key)
                case .error(let message):
                    throw .reply(message, command: "XAUTOCLAIM \(key)")
                default:
                    throw .reply("unexpected reply \(reply)", command: "XAUTOCLAIM \(key)")
                }
            }
            try commit(held)
            if !missing.isEmpty { try verify(missing) }
        }
        return more
    }

    /// How long a consumer with no pending entry is idle before it is deleted from the group: a
    /// day, or 100 claim_idle.
    lazy var pruneIdleMs: Int64 = max(86_400_000, 100 * config.claimIdleMs)

    /// Deletes consumers gone for good (no pending entry, idle `pruneIdleMs`).
    func prune() throws(AggregateError) {
        let idle = pruneIdleMs
        var start = 0
        while start < streams.count, !stopSignal.isStopped {
            let chunk = Array(streams[start..<min(streams.count, start + 100)])
            start += 100
            let replies = try pipeline(chunk.map { RedisCommand(["EVAL", Scripts.prune, "1", $0, config.group, String(idle)]) }, "EVAL prune")
            for (key, r) in zip(chunk, replies) {
                if case .integer(let n) = r, n > 0 {
                    logger.info("consumers gone for good deleted from the group", metadata: ["redis.key": "\(key)", "aggregate.deleted_consumers": "\(n)"])
                }
            }
        }
    }

    // MARK: - Writing the buckets that are due

    /// A bucket's state hash, as read: its base (the merged figures written last), its partials,
    /// whether its figures must be read back (made after it closed, with no base).
    struct BucketState {
        var member: String
        var bucket: AggregateConfig.Bucket
        var start: Int64
        var stream: StreamInfo
        var merged = BucketStats()
        var base: BucketStats?
        var lookup = false
        /// The hash is gone (written and deleted by another worker meanwhile): nothing to write.
        var gone = true
    }

    /// Where a state hash key points: bucket, start, stream.
    func parseMember(_ member: String) -> (bucket: AggregateConfig.Bucket, start: Int64, stream: String)? {
        guard let (ms, start, stream) = config.parseBucketStateKey(member) else { return nil }
        let bucket = config.buckets.first { $0.ms == ms }
            ?? AggregateConfig.Bucket(ms: ms, text: Units.formatDuration(ms * 1_000_000), retentionMs: config.retentionMs)
        return (bucket, start, stream)
    }

    /// Writes the figures of buckets that are due (some of them: a chunk from a random place, so
    /// that workers mostly take different ones). Returns whether more are due.
    func finalize(now: Int64) throws(AggregateError) -> Bool {
        let due = try pipeline([RedisCommand(["ZCOUNT", dueKey, "-inf", String(now)])], "ZCOUNT")[0]
        guard case .integer(let dueCount) = due, dueCount > 0 else { return false }
        let chunk = Self.finalizeChunk
        let offset = dueCount > chunk ? Int.random(in: 0...(Int(dueCount) - chunk)) : 0
        let range = try pipeline([RedisCommand(["ZRANGEBYSCORE", dueKey, "-inf", String(now), "LIMIT", String(offset), String(chunk)])], "ZRANGEBYSCORE")[0]
        let members = (range.array ?? []).compactMap(\.string)
        guard !members.isEmpty else { return false }
        var watch = RedisCommand(["WATCH"])
        for m in members { watch.append(m) }
        let replies = try pipeline([watch] + members.map { RedisCommand(["HGETALL", $0]) }, "WATCH/HGETALL")
        var states: [BucketState] = []
        var seriesTotal = 0
        var unknown: [String] = []
        for (m, reply) in zip(members, replies.dropFirst()) {
            guard let (bucket, start, streamKey) = parseMember(m) else {
                unknown.append(m)
                continue
            }
            let stream = info[streamKey] ?? StreamInfo(key: streamKey, template: config.streamKey) ?? StreamInfo(key: streamKey, name: streamKey, host: nil)
            var state = BucketState(member: m, bucket: bucket, start: start, stream: stream)
            let flat = reply.array ?? []
            var i = 0
            while i + 1 < flat.count {
                defer { i += 2 }
                guard let field = flat[i].string, case .bulk(let value) = flat[i + 1] else { continue }
                state.gone = false
                if field == "lookup" {
                    state.lookup = true
                } else if let stats = BucketStats.decode(value) {
                    if field == "base" { state.base = stats } else { state.merged.merge(stats) }
                } else {
                    logger.error("a bucket's state holds a field that is not partial figures; left out", metadata: ["redis.key": "\(m)", "aggregate.field": "\(field)"])
                }
            }
            if let base = state.base { state.merged.merge(base) }
            // At least one bucket per write; then as many as fit.
            let n = state.merged.seriesCount
            if !states.isEmpty, seriesTotal + n > Self.seriesPerWrite { break }
            seriesTotal += n
            states.append(state)
        }
        // Buckets closed with no base: their figures may have been written before their state
        // expired (late entries); read them back and merge.
        let lookups = states.indices.filter { states[$0].base == nil && states[$0].lookup }
        if !lookups.isEmpty { try readBack(&states, lookups) }
        var commands = [RedisCommand(["MULTI"])]
        var samples = 0
        for s in states {
            if s.gone {
                // Nothing to write, and no empty base to leave behind (a late entry would then be
                // merged with nothing instead of the figures written).
                commands.append(RedisCommand(["ZREM", dueKey, s.member]))
                continue
            }
            for (tags, fields) in s.merged.series {
                for (field, stats) in fields where stats.count > 0 {
                    for agg in Aggregation.allCases {
                        var c = RedisCommand(["TS.ADD"])
                        c.append(keys.key(s.stream, tags: tags, field: field, agg: agg, bucket: s.bucket))
                        c.append(s.start)
                        c.append(double: stats.value(agg))
                        c.append("RETENTION"); c.append(s.bucket.retentionMs)
                        c.append("DUPLICATE_POLICY"); c.append("LAST")
                        c.append("ON_DUPLICATE"); c.append("LAST")
                        keys.appendLabels(s.stream, tags: tags, field: field, agg: agg, bucket: s.bucket, to: &c)
                        commands.append(c)
                        samples += 1
                    }
                }
            }
            commands.append(RedisCommand(["DEL", s.member]))
            if config.keepMs > 0 {
                var h = RedisCommand(["HSET", s.member, "base"])
                h.append(bytes: s.merged.encoded())
                commands.append(h)
                commands.append(RedisCommand(["PEXPIRE", s.member, String(config.keepMs)]))
            }
            commands.append(RedisCommand(["ZREM", dueKey, s.member]))
        }
        for m in unknown { commands.append(RedisCommand(["ZREM", dueKey, m])) }
        // (Lengths of the group this worker lacks: see `Scripts.bumpLacking`.)
        commands.append(RedisCommand(["EVAL", Scripts.bumpLacking, "2", bucketsKey, sincePrefix] + config.buckets.map(\.text)))
        commands.append(RedisCommand(["EXEC"]))
        let result = try pipeline(commands, "MULTI/EXEC")
        switch result.last! {
        case .null:
            counters.conflicts += 1
            return true
        case .array(let results):
            counters.finalized += states.count
            counters.samples += samples
            var firstError: String?
            for r in results {
                if case .error(let m) = r {
                    counters.rejected += 1
                    firstError = firstError ?? m
                }
            }
            if let firstError {
                logger.warning("Redis refused aggregate samples", metadata: ["error": "\(firstError)", "aggregate.rejected": "\(counters.rejected)"])
            }
            return dueCount > states.count
        case .error(let m):
            throw .reply(m, command: "EXEC")
        default:
            throw .reply("unexpected reply \(result.last!)", command: "EXEC")
        }
    }

    /// The figures written earlier for the series of `states[indices]`, merged into them (count, min
    /// and max exactly; the sum as the one double written).
    func readBack(_ states: inout [BucketState], _ indices: [Int]) throws(AggregateError) {
        var commands: [RedisCommand] = []
        var targets: [(state: Int, tags: [Tag], field: String)] = []
        let read: [Aggregation] = [.count, .sum, .min, .max]
        for i in indices {
            let s = states[i]
            for (tags, fields) in s.merged.series {
                for field in fields.keys {
                    targets.append((i, tags, field))
                    for agg in read {
                        let key = keys.key(s.stream, tags: tags, field: field, agg: agg, bucket: s.bucket)
                        commands.append(RedisCommand(["TS.RANGE", key, String(s.start), String(s.start)]))
                    }
                }
            }
        }
        let replies = try pipeline(commands, "TS.RANGE")
        func sample(_ r: RedisReply) -> Double? {
            guard case .array(let samples) = r, case .array(let pair)? = samples.first, pair.count == 2,
                  let text = pair[1].string else { return nil }
            return Double(text)
        }
        var base: [Int: BucketStats] = [:]
        for (n, t) in targets.enumerated() {
            let v = replies[(4 * n)..<(4 * n + 4)].map(sample)
            guard let count = v[0], let sum = v[1], let mn = v[2], let mx = v[3], count >= 1 else { continue }
            var stats = ExactSum()
            stats.add(sum)
            base[t.state, default: BucketStats()].series[t.tags, default: [:]][t.field] = FieldStats(count: Int64(count), min: mn, max: mx, sum: stats)
        }
        for i in indices {
            counters.lookups += 1
            if let b = base[i] { states[i].merged.merge(b) }
        }
    }
}

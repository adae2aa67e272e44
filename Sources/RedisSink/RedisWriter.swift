import Logging
import SpillwayBatch
import SpillwayConfig
import SpillwayCore

/// What became of records, counted.
public struct WriteCounters: Sendable, Equatable {
    /// Acknowledged by Redis.
    public var written: Int64 = 0
    /// Already in Redis (an explicit stream ID at or below the stream's top).
    public var duplicates: Int64 = 0
    /// Refused for good (WRONGTYPE, syntax, NOPERM, unknown command, no numeric field…).
    public var rejected: Int64 = 0
    /// Timeseries fields left out because they are not numbers.
    public var skippedFields: Int64 = 0

    public init() {}

    public static func += (a: inout WriteCounters, b: WriteCounters) {
        a.written += b.written
        a.duplicates += b.duplicates
        a.rejected += b.rejected
        a.skippedFields += b.skippedFields
    }
}

/// A batch on its way: which commands are settled, and what each record came to.
public struct PendingBatch: Sendable {
    public var batch: EncodedBatch
    var done: [Bool]
    var rejected: [Bool]
    public internal(set) var settledRecords = 0
    /// Whether the records rejected (and fields skipped) at encoding were counted yet.
    var encodingCounted = false
    /// XADDs with explicit IDs that Redis answered with an error that is no fault of the record (OOM,
    /// READONLY, LOADING, NOAUTH…): surely not written. Near maxmemory Redis refuses some commands
    /// of a pipeline and accepts later ones of the same key (in the same pipeline, or in the batch
    /// behind it on the wire) as its memory dips, so such a record's ID may now be below its
    /// stream's top: sent again as it is, it would be answered "equal or smaller" and taken for a
    /// duplicate, and lost. They are settled here as moved (`takeMoved`): the encode stage gives
    /// them new IDs in its next batch, minted after every ID given before, so they land after the
    /// records accepted meanwhile (their `timestamp` field unchanged). A record whose outcome is
    /// unknown (a timeout, a broken connection) keeps its ID: it may be in Redis.
    public internal(set) var moved: [Int] = []
    /// XADDs with explicit IDs answered "equal or smaller than the target stream top item": a
    /// duplicate (sent before, written then), or a record Redis refused earlier and never wrote
    /// (its refusal not read: a `kill -9`, a timeout) whose ID is now below the top. Left pending
    /// until `RedisWriter.verifySuspects` tells them apart.
    public internal(set) var suspects: [Int] = []
    public var hasSuspects: Bool { !suspects.isEmpty }

    public init(_ batch: EncodedBatch) {
        self.batch = batch
        done = Array(repeating: false, count: batch.commandCount)
        rejected = Array(repeating: false, count: batch.recordCount)
    }

    public var isComplete: Bool { !done.contains(false) }

    /// The moved commands as a batch of their own (records re-indexed, all pinned as lines: never
    /// dropped), and forgets them; nil when none.
    public mutating func takeMoved() -> EncodedBatch? {
        guard !moved.isEmpty else { return nil }
        var out = commands(moved)
        out.lineCount = out.recordCount
        moved = []
        return out
    }

    /// The part not settled yet, as a batch of its own (records re-indexed), for the spill buffer.
    /// Records and fields counted at encoding are not in it (they were counted).
    public func remainder() -> EncodedBatch {
        commands((0..<batch.commandCount).filter { !done[$0] })
    }

    /// These commands of the batch, in order, as a batch of their own (records re-indexed).
    func commands(_ indices: [Int]) -> EncodedBatch {
        var index: [Int: Int] = [:]
        func remap(_ i: Int) -> Int {
            if let j = index[i] { return j }
            index[i] = index.count
            return index.count - 1
        }
        var out = EncodedBatch()
        for i in indices {
            let role: EncodedCommand.Role = switch batch.role(i) {
            case .record(let r): .record(remap(r))
            case .samples(let owners): .samples(owners: owners.map(remap))
            case .setup: .setup
            }
            out.append(command: i, of: batch, role: role)
        }
        out.recordCount = index.count
        return out
    }
}

/// Sends encoded batches over one connection and settles every record: written, duplicate or
/// rejected. Transient failures (connection errors, timeouts, LOADING, BUSY, OOM, READONLY, …) leave
/// the affected commands pending, to be sent again as they are.
public final class RedisWriter {
    public let connection: RedisConnection
    public var encoder: BatchEncoder
    let logger: Logger
    /// Keys already logged as rejected (each is logged once; bounded).
    private var loggedKeys: Set<KeyBytes> = []
    private static let maxLoggedKeys = 10_000

    /// Commands sent ahead of the next batch, before anything else on the connection: series found
    /// gone from Redis, created again (bare) so their samples can be sent again, and labels
    /// (TS.ALTER) for series whose TS.CREATE found them existing.
    private var preamble: [Preamble] = []
    struct Preamble: Sendable {
        var command: RedisCommand
        /// The series this command creates again, if it is that series' TS.CREATE.
        var recreates: [UInt8]?
    }
    private static let maxPreamble = 100_000
    /// Series queued to be created again (not yet acknowledged).
    private var recreating: Set<KeyBytes> = []
    /// Series that could not be created again (a permanent error): their samples are rejected.
    private var unrecreatable: Set<KeyBytes> = []

    public init(connection: RedisConnection, encoder: BatchEncoder, logger: Logger) {
        self.connection = connection
        self.encoder = encoder
        self.logger = logger
    }

    /// Encodes records into a batch. For explicit stream IDs, raises each key's high-water mark to
    /// the stream's last ID in Redis (when Redis answers) the first time the key is met in this run,
    /// before minting from it; then saves the marks before any minted ID can be sent.
    public func encode(_ records: [QueuedRecord], now: Int64) throws(StreamIDMinter.PersistenceError) -> EncodedBatch {
        let batch = encoder.encode(records, now: now, lastIDInRedis: { [connection, logger] key in
            Self.lastID(of: key, connection: connection, logger: logger)
        })
        try encoder.ids.save()
        return batch
    }

    /// The stream's `last-generated-id` (XINFO STREAM): `.some(nil)` when there is no such stream,
    /// nil when Redis did not tell (then the key is asked again with the next batch).
    static func lastID(of key: [UInt8], connection: RedisConnection, logger: Logger) -> StreamID?? {
        var c = RedisCommand(["XINFO", "STREAM"])
        c.append(bytes: key)
        let (replies, error) = connection.pipeline([c])
        if let error {
            logger.debug("cannot read the stream's last ID now; minting from the saved marks", metadata: ["error": "\(error)"])
        }
        switch replies.first {
        case .array(let fields)?:
            var i = 0
            while i + 1 < fields.count {
                if fields[i].string == "last-generated-id", let text = fields[i + 1].string, let id = StreamID(text) { return .some(id) }
                i += 2
            }
            return .some(nil)
        case .error(let message)? where message.contains("no such key"):
            return .some(nil)
        default:
            return nil
        }
    }

    /// One attempt: sends every unsettled command of the batch in one pipeline. Returns what it
    /// settled, and the error that left commands pending, if any. Nothing else may be outstanding on
    /// the connection: the duplicate replies it meets are verified here (`verifySuspects`).
    public func attempt(_ p: inout PendingBatch) -> (counters: WriteCounters, error: String?) {
        let sent = begin(p)
        var (counters, error) = finish(&p, sent)
        if p.hasSuspects {
            counters += verifySuspects(&p)
            // Not verified now (Redis did not answer): pending, sent again.
            if !p.isComplete, error == nil { error = "cannot verify duplicate replies now" }
        }
        return (counters, error)
    }

    /// Tells the XADDs answered "equal or smaller" (`PendingBatch.suspects`) apart: an entry with
    /// that ID in its stream is a duplicate (counted); an entry that is not there, while the stream
    /// holds an older one (so it was not trimmed away), was never written: its refusal was never
    /// read (a `kill -9`, a timeout or a broken connection after Redis refused it and took later
    /// records of the key), and it is moved (`PendingBatch.moved`) to get a new ID. Sends
    /// `XRANGE key id id` for each and `XRANGE key - + COUNT 1` for each key: call it only when
    /// nothing else is outstanding on the connection. When Redis does not answer, they stay
    /// suspects (pending: sent again later, and verified then).
    public func verifySuspects(_ p: inout PendingBatch) -> WriteCounters {
        var counters = WriteCounters()
        guard p.hasSuspects else { return counters }
        var commands: [RedisCommand] = []
        var ids: [StreamID?] = []
        var keyIndex: [KeyBytes: Int] = [:]
        var keyOf: [Int] = []
        for i in p.suspects {
            let at = p.batch.streamIDArgument(i) ?? 2
            let idText = p.batch.argument(i, at)
            var c = RedisCommand(["XRANGE"])
            c.append(bytes: p.batch.argument(i, 1))
            c.append(bytes: idText)
            c.append(bytes: idText)
            commands.append(c)
            ids.append(StreamID(String(decoding: idText, as: UTF8.self)))
            let key = KeyBytes(Array(p.batch.argument(i, 1)))
            if keyIndex[key] == nil { keyIndex[key] = keyIndex.count }
            keyOf.append(keyIndex[key]!)
        }
        var firstCommands = [RedisCommand](repeating: RedisCommand(), count: keyIndex.count)
        for (key, n) in keyIndex {
            var c = RedisCommand(["XRANGE"])
            c.append(bytes: key.bytes)
            c.append("-")
            c.append("+")
            c.append("COUNT")
            c.append("1")
            firstCommands[n] = c
        }
        let (replies, error) = connection.pipeline(commands + firstCommands)
        guard error == nil, replies.count == commands.count + firstCommands.count else {
            logger.debug("cannot verify duplicate replies now; the records are sent again later", metadata: ["error": "\(error.map { "\($0)" } ?? "short reply")"])
            p.suspects = []
            return counters
        }
        for (n, i) in p.suspects.enumerated() {
            let here = replies[n].array.map { !$0.isEmpty }
            let first = replies[commands.count + keyOf[n]].array?.first?.array?.first?.string.flatMap { StreamID($0) }
            p.done[i] = true
            p.settledRecords += 1
            if here == false, let id = ids[n], let first, first < id {
                // Not in its stream, though an older entry is: never written.
                p.moved.append(i)
            } else {
                // There, trimmed away, or not verifiable (an error reply): a duplicate.
                counters.duplicates += 1
            }
        }
        p.suspects = []
        return counters
    }

    /// An attempt under way: which commands of the batch went out, and their replies' ticket
    /// (nil when every command was settled already).
    public struct Attempt: Sendable {
        let indices: [Int]
        let ticket: RedisConnection.Ticket?
        /// Preamble commands sent before the batch's, and their ticket.
        var preamble: [Preamble] = []
        var preambleTicket: RedisConnection.Ticket?
    }

    /// The first half of an attempt: writes every unsettled command of the batch and returns
    /// without waiting for the replies, so the next batch can go out while Redis works on this one.
    /// Each `begin` must be followed by its `finish`, in the same order, before the connection is
    /// used otherwise.
    public func begin(_ p: PendingBatch) -> Attempt {
        let indices = p.done.indices.filter { !p.done[$0] }
        if indices.isEmpty { return Attempt(indices: [], ticket: nil) }
        var ahead: [Preamble] = []
        var aheadTicket: RedisConnection.Ticket?
        if !preamble.isEmpty {
            swap(&ahead, &preamble)
            let sent = connection.send(ahead.map(\.command))
            aheadTicket = sent
            if sent.error != nil {
                // Not sent: neither is the batch (its samples need these series).
                return Attempt(indices: indices, ticket: sent, preamble: ahead, preambleTicket: nil)
            }
        }
        let batch = p.batch
        let ticket = connection.send(batch, indices: indices)
        return Attempt(indices: indices, ticket: ticket, preamble: ahead, preambleTicket: aheadTicket)
    }

    /// The second half: reads the replies and settles what they settle. Returns what it settled,
    /// and the error that left commands pending, if any.
    public func finish(_ p: inout PendingBatch, _ sent: Attempt) -> (counters: WriteCounters, error: String?) {
        var counters = WriteCounters()
        if !p.encodingCounted {
            p.encodingCounted = true
            counters.rejected += Int64(p.batch.rejectedAtEncoding)
            counters.skippedFields += Int64(p.batch.skippedFields)
        }
        guard let ticket = sent.ticket else { return (counters, nil) }
        var firstError: String?
        if !sent.preamble.isEmpty {
            if let aheadTicket = sent.preambleTicket {
                let (replies, error) = connection.receive(aheadTicket, detail: .full)
                settlePreamble(sent.preamble, replies)
                if let error { firstError = "\(error)" }
            } else {
                settlePreamble(sent.preamble, [])
            }
        }
        let indices = sent.indices
        let (replies, connectionError) = connection.receive(ticket, detail: .errorsOnly)
        if firstError == nil { firstError = connectionError.map { "\($0)" } }
        var vanished = 0
        // XADDs Redis answered with an error that leaves them pending: not written, for sure.
        var refused: [Int] = []
        for (n, reply) in replies.enumerated() {
            let i = indices[n]
            // The common cases, settled without copying the command: an XADD written, and a TS.MADD
            // that wrote every sample (no error, and no array: `errorsOnly` keeps only arrays with an
            // error).
            if !reply.isError {
                if p.batch.isRecord(i) {
                    counters.written += 1
                    p.done[i] = true
                    p.settledRecords += 1
                    continue
                }
                if case .samples(let owners) = p.batch.role(i), reply.array == nil {
                    p.done[i] = true
                    Self.forEachOwner(owners) { owner in
                        if p.rejected[owner] { counters.rejected += 1 } else { counters.written += 1 }
                        p.settledRecords += 1
                    }
                    continue
                }
            }
            let command = p.batch.command(i)
            switch command.role {
            case .setup:
                if case .error(let message) = reply {
                    if message.contains("already") {
                        p.done[i] = true
                        // An existing series (made by an earlier run, or created again bare after
                        // Redis lost it): its labels are set to this TS.CREATE's.
                        if command.command.name == "TS.CREATE" { queueLabels(of: command.command) }
                    } else {
                        let kind = ReplyErrorKind.classify(message)
                        if keepsPending(kind, message, &firstError) { continue }
                        logRejected(command.key, command: command.command.name, message)
                        p.done[i] = true
                    }
                } else {
                    p.done[i] = true
                }
                if p.done[i], command.command.name == "TS.CREATE", command.command.argument(1).elementsEqual(command.key) {
                    encoder.seriesCreated(command.key)
                }
            case .record:
                if case .error(let message) = reply {
                    let kind = ReplyErrorKind.classify(message)
                    if keepsPending(kind, message, &firstError) {
                        refused.append(i)
                        continue
                    }
                    if kind == .duplicate {
                        // Verified before it counts (see `PendingBatch.suspects`).
                        if p.batch.streamIDArgument(i) != nil {
                            p.suspects.append(i)
                            continue
                        }
                        counters.duplicates += 1
                    } else {
                        counters.rejected += 1
                        logRejected(command.key, command: command.command.name, message)
                        noteRejection(command.key, message)
                    }
                } else {
                    counters.written += 1
                }
                p.done[i] = true
                p.settledRecords += 1
            case .samples(let owners):
                var pending = false
                var sampleErrors: [(sample: Int, message: String)] = []
                switch reply {
                case .array(let results):
                    for (j, r) in results.enumerated() where j < owners.count {
                        if case .error(let message) = r { sampleErrors.append((j, message)) }
                    }
                case .error(let message):
                    sampleErrors = owners.indices.map { ($0, message) }
                default:
                    break
                }
                for (sample, message) in sampleErrors {
                    let owner = owners[sample]
                    let series = command.command.argument(1 + 3 * sample)
                    // No such series (RedisTimeSeries answers a missing key and a key of another
                    // type alike).
                    let missing = message.contains("not a TSDB key") || message.contains("does not exist")
                    // A series whose TS.CREATE in this batch is not settled yet does not exist yet.
                    let seriesPending = missing
                        && (0..<p.batch.commandCount).contains { k in
                            p.batch.role(k) == .setup && !p.done[k] && p.batch.key(k).elementsEqual(series)
                        }
                    var kind = seriesPending ? .transient : ReplyErrorKind.classify(message)
                    var message = message
                    // A series created earlier is gone (Redis restarted without its data, or the key
                    // was deleted): it is created again ahead of the next attempt, which sends the
                    // sample again. (The TS.CREATE tells a gone series from a key of another type.)
                    if missing, !seriesPending, seriesGone(Array(series)) {
                        kind = .transient
                        vanished += 1
                        message = "series \(String(decoding: series, as: UTF8.self)) is gone from Redis; it is created again and its samples sent again"
                    }
                    if keepsPending(kind, message, &firstError) {
                        pending = true
                    } else {
                        if !p.rejected[owner] {
                            let series = Array(command.command.argument(1 + 3 * sample))
                            logRejected(series, command: "TS.MADD", message)
                            noteRejection(series, message)
                        }
                        p.rejected[owner] = true
                    }
                }
                if pending { continue }
                p.done[i] = true
                Self.forEachOwner(owners) { owner in
                    if p.rejected[owner] { counters.rejected += 1 } else { counters.written += 1 }
                    p.settledRecords += 1
                }
            }
        }
        if !refused.isEmpty {
            // Surely not written (an error reply), and perhaps below their stream's top by now: moved
            // out of this batch, to be given new IDs by the encode stage (see `PendingBatch.moved`).
            for i in refused {
                p.done[i] = true
                p.settledRecords += 1
            }
            p.moved.append(contentsOf: refused)
        }
        if vanished > 0 {
            logger.warning("series written before are gone from Redis (it lost its data, or they were deleted): they are created again, without labels until their next record, and their samples sent again",
                           metadata: ["redis.samples": "\(vanished)", "redis.series_queued": "\(recreating.count)"])
        }
        // A refusal is a failed attempt for the breaker, even when nothing is left pending. Suspects
        // (duplicate replies to verify) are no failure: the caller verifies them.
        let unsettled = p.done.indices.contains { !p.done[$0] && !p.suspects.contains($0) }
        return (counters, !unsettled && refused.isEmpty ? nil : (firstError ?? "no reply"))
    }

    /// A TS.MADD sample found its series gone: queues the series to be created again, unless that
    /// failed for good before (or found a key of another type). Returns whether the sample is to
    /// be sent again.
    private func seriesGone(_ key: [UInt8]) -> Bool {
        if unrecreatable.contains(KeyBytes(key)) { return false }
        if recreating.contains(KeyBytes(key)) { return true }
        let commands = encoder.recreateCommands(for: key)
        // Bounded: past the bound, the series is found gone again at a later attempt.
        guard preamble.count + commands.count <= Self.maxPreamble else { return true }
        recreating.insert(KeyBytes(key))
        encoder.seriesVanished(key)
        for (n, c) in commands.enumerated() { preamble.append(Preamble(command: c, recreates: n == 0 ? key : nil)) }
        return true
    }

    /// `TS.ALTER key LABELS …` with a TS.CREATE's labels, sent ahead of the next batch.
    private func queueLabels(of create: RedisCommand) {
        guard preamble.count < Self.maxPreamble,
              let at = (2..<create.argc).first(where: { create.argument($0).elementsEqual("LABELS".utf8) }) else { return }
        var alter = RedisCommand(["TS.ALTER"])
        alter.append(bytes: create.argument(1))
        for j in at..<create.argc { alter.append(bytes: create.argument(j)) }
        preamble.append(Preamble(command: alter, recreates: nil))
    }

    /// The preamble's replies (fewer than its commands when the connection failed: the rest are
    /// sent again, as they are harmless twice).
    private func settlePreamble(_ sent: [Preamble], _ replies: [RedisReply]) {
        var again: [Preamble] = []
        for (n, item) in sent.enumerated() {
            guard n < replies.count else {
                again.append(item)
                continue
            }
            var created = true
            if case .error(let message) = replies[n] {
                if message.contains("already") {
                    // The key exists: a series made meanwhile (then the samples go in), or a key of
                    // another type (then they are refused, for good).
                    created = item.recreates == nil
                } else {
                    switch ReplyErrorKind.classify(message) {
                    case .transient, .credentials:
                        again.append(item)
                        continue
                    case .permanent, .duplicate:
                        created = false
                        logRejected(Array(item.command.argument(1)), command: item.command.name, message)
                    }
                }
            }
            guard let key = item.recreates else { continue }
            recreating.remove(KeyBytes(key))
            // Created again, it stays unknown to the encoders: the next record for it brings its
            // TS.CREATE with labels, which finds it existing and so sets them.
            if !created, unrecreatable.count < Self.maxLoggedKeys { unrecreatable.insert(KeyBytes(key)) }
        }
        preamble = again + preamble
    }

    /// Each record of a TS.MADD once. Its samples come record by record (runs of one owner), so
    /// a set is needed only when an owner shows up again after another.
    static func forEachOwner(_ owners: [Int], _ body: (Int) -> Void) {
        if zip(owners, owners.dropFirst()).allSatisfy({ $0 <= $1 }) {
            var previous = Int.min
            for owner in owners where owner != previous {
                previous = owner
                body(owner)
            }
        } else {
            var seen = Set<Int>()
            for owner in owners where seen.insert(owner).inserted { body(owner) }
        }
    }

    /// Whether an error reply leaves its command pending (transient, or NOAUTH: then the connection
    /// is closed, so the next attempt reconnects and authenticates); it becomes the attempt's error.
    private func keepsPending(_ kind: ReplyErrorKind, _ message: String, _ firstError: inout String?) -> Bool {
        switch kind {
        case .credentials:
            connection.close()
            fallthrough
        case .transient:
            firstError = firstError ?? message
            return true
        case .permanent, .duplicate:
            return false
        }
    }

    /// Records refused for good since the last `takeRejections`, per key, with Redis's last reply.
    public struct Rejection: Sendable, Equatable {
        public var records: Int64
        public var reply: String
    }
    private var rejections: [KeyBytes: Rejection] = [:]

    private func noteRejection(_ key: [UInt8], _ message: String) {
        // Bounded: past 10,000 keys in one interval, the rest count under the last key seen.
        if rejections.count >= Self.maxLoggedKeys, rejections[KeyBytes(key)] == nil, let any = rejections.keys.first {
            rejections[any]!.records += 1
            return
        }
        rejections[KeyBytes(key), default: Rejection(records: 0, reply: message)].records += 1
        rejections[KeyBytes(key)]!.reply = message
    }

    /// The rejections noted since the last call (for `status`), and forgets them.
    public func takeRejections() -> [(key: [UInt8], rejection: Rejection)] {
        defer { rejections.removeAll() }
        return rejections.map { ($0.key.bytes, $0.value) }
    }

    private func logRejected(_ key: [UInt8], command: String, _ message: String) {
        guard loggedKeys.count < Self.maxLoggedKeys, loggedKeys.insert(KeyBytes(key)).inserted else { return }
        logger.error("Redis rejected a write; records for this key are counted as rejected (logged once per key)",
                     metadata: ["redis.key": "\(String(decoding: key, as: UTF8.self))", "redis.command": "\(command)", "redis.reply": "\(message)"])
    }
}

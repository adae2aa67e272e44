import Foundation
import Logging
import RedisSink
import SpillwayBatch
import SpillwayCore
import SpillwayConfig
import Spool

/// The send stage's state: the breaker, the spill buffer, and what goes where. Every batch is already
/// in the buffer (written ahead by the encode stage).
/// - handle: a batch is sent from memory only when it is the oldest row and the breaker is closed;
///   acknowledged, its row is deleted; partly written, its row is replaced by what it left unsettled.
///   Otherwise it waits in the buffer, behind the older rows, so per key, records reach Redis in
///   production order.
/// - replay: while older rows exist and the breaker allows, they are sent oldest first (a half-open
///   breaker PINGs first), in chunks of `replay_batch_size` records, at most `replay_rate` records/s;
///   a row is deleted only after Redis acknowledged all of it. Records keep the IDs they were given,
///   so a batch whose outcome was unknown is replayed with no duplicate.
/// Its collaborators are given (RouterCollaborators.swift): the connection (`sender`), the spill
/// buffer (`backlog`), the clock, where it counts (`stats`) and the rest of the writer (`upstream`).
struct Router<Sender: RouterSender> {
    let sender: Sender
    var backlog: (any RouterBacklog)?
    let clock: any RouterClock
    let stats: any RouterStatsSink
    let upstream: any RouterUpstream
    let settings: RouterSettings
    let logger: Logger
    /// The breaker's jitter, in [-1, 1] (random; fixed in tests).
    let jitter: () -> Double
    var breaker: CircuitBreaker
    var lastSave: Int64 = 0
    var stateDirty = true
    /// Whether a batch was delivered since this router began: the first delivery saves the state
    /// at once, so that `status` shows it without waiting for the 5 s save.
    var deliveredOnce = false
    var replayBudgetAt: Int64 = 0
    var fullLogged = false
    var lastLoggedError: String?
    /// Failures that repeat (a full disk, an unreadable buffer) are logged once per episode.
    var episodes = Episodes()
    /// Whether the spill buffer's reserve was held when last looked at (see `noteDisk`).
    var reserveHeld = true
    /// Whether the latest failure was the credentials' or the ACL's (status: CRITICAL at once).
    var credentialsFailing = false
    static var credentialsCondition: String {
        """
        Redis refused this agent's credentials or ACL: set [outputs.redis] password or password_file \
        to what the server expects (and username for an ACL user; remove them when the server wants \
        no password), or grant the ACL user the commands and keys it writes \
        (XADD and XINFO, or TS.* with format = "timeseries", on the key template's keys). \
        Records wait in the spill buffer and are all delivered once it works
        """
    }
    /// Replayed records per second over the last window (for status's ETA).
    var replayWindowStart: Int64 = 0
    var replayWindowRecords: Int64 = 0
    var replayRate: Double = 0

    /// The newest row this stage may replay: rows handed to it (and left, e.g. after a failure), and
    /// rows from an earlier run. Newer rows are on their way through the handoff, in memory.
    var replayableUpTo: Int64 = 0

    /// The agent's state as saved last: what this router does not know of (the run's backlog at its
    /// start, an earlier run's last error) stays as it was.
    var state = AgentState()

    /// `breaker`: the one a reload carried over (see `BreakerCarry`), else a new one, closed.
    init(sender: Sender, backlog: (any RouterBacklog)?, clock: any RouterClock, stats: any RouterStatsSink,
         upstream: any RouterUpstream, settings: RouterSettings, logger: Logger, breaker: CircuitBreaker? = nil,
         jitter: @escaping () -> Double = { Double.random(in: -1...1) }) {
        self.sender = sender
        self.backlog = backlog
        self.clock = clock
        self.stats = stats
        self.upstream = upstream
        self.settings = settings
        self.logger = logger
        self.jitter = jitter
        self.breaker = breaker ?? CircuitBreaker(settings: settings.breaker, now: clock.now())
        replayableUpTo = ((try? backlog?.newestID()) ?? nil) ?? 0
        state = ((try? backlog?.readState()) ?? nil) ?? AgentState()
        // The previous run ended during an outage (its breaker not closed, no write since it
        // opened): a restart does not end it, so its start (and its failures') stand until a
        // write succeeds in this run. (`status --check`'s critical_open counts from it.)
        if state.breaker.state != .closed, let since = state.breaker.sinceNs, (state.lastSuccessNs ?? .min) < since {
            carriedOutageSince = since
            carriedFailingSince = min(state.lastError?.firstFailureNs ?? since, since)
        }
    }

    /// An outage the previous run left going on: when it began, and when its failures began (wall
    /// clock); nil once a write succeeded in this run.
    var carriedOutageSince: Int64?
    var carriedFailingSince: Int64?

    var hasBacklog: Bool { !(backlog?.isEmpty ?? true) }
    /// Whether a row this stage may replay is in the buffer (older rows are always among them).
    var replayPending: Bool {
        guard let backlog else { return false }
        let onTheWire = inFlight.compactMap(\.id)
        guard let oldest = backlog.oldestIDs(onTheWire.count + 1).first(where: { !onTheWire.contains($0) }) else { return false }
        return oldest <= replayableUpTo
    }

    // MARK: routing

    /// A batch from the encode stage. With a buffer it is already there (row `id`): it is sent from
    /// memory only when every older row is on the wire already (or none is left) and the breaker is
    /// closed; otherwise it waits there. Sent, it stays in flight while the next batch goes out
    /// (`finishOldest` settles it): acknowledged, its row is deleted; partly written, its row is
    /// replaced by what is left.
    mutating func handle(_ item: HandedBatch) {
        noteBufferFull()
        guard let backlog, let id = item.id else {
            // No buffer (or it failed for this batch): sent from memory, retried in memory. A
            // batch kept in memory beside a buffer goes alone.
            if backlog != nil { drainInFlight() }
            begin(id: nil, item.batch)
            if backlog != nil { drainInFlight() }
            return
        }
        replayableUpTo = max(replayableUpTo, id)
        let ahead = inFlight.compactMap(\.id)
        let waiting = backlog.oldestIDs(ahead.count + 1)
        guard let oldest = waiting.first, id >= oldest else {
            // Replayed already (or dropped to make room): it went through the buffer.
            stats.update { $0.spilled += Int64(item.batch.recordCount) }
            return
        }
        guard breaker.state == .closed, ahead.count == inFlight.count, waiting == ahead + [id] else {
            if !inFlight.isEmpty {
                // Settle what is on the wire first, then decide again.
                drainInFlight()
                handle(item)
                return
            }
            stats.update { $0.spilled += Int64(item.batch.recordCount) }
            stateDirty = true
            return
        }
        begin(id: id, item.batch)
    }

    /// A batch on the wire: its row (nil when it is kept in memory only), and what it settled so far.
    struct InFlight {
        var id: Int64?
        var pending: PendingBatch
        var attempt: Sender.Attempt
        /// A batch of the backlog (counted as replayed).
        var replay = false
    }

    /// Batches sent whose replies are not read yet, oldest first: at most `maxInFlight`.
    var inFlight: [InFlight] = []
    /// Two batches on one connection: Redis works on one while the next is formatted and written
    /// and the previous one's replies are read, so it never waits for this stage between batches.
    static var maxInFlight: Int { 2 }
    var hasInFlight: Bool { !inFlight.isEmpty }
    var inFlightIsFull: Bool { inFlight.count >= Self.maxInFlight }

    /// Writes a batch's commands and leaves it in flight. Delivered batches' rows are deleted while
    /// Redis works on it.
    mutating func begin(id: Int64?, _ batch: EncodedBatch, replay: Bool = false) {
        let pending = PendingBatch(batch)
        if let id { backlog?.markSending(id) }
        let attempt = sender.begin(pending)
        inFlight.append(InFlight(id: id, pending: pending, attempt: attempt, replay: replay))
        if acknowledgementsPending { flushAcknowledgements() }
    }

    /// Reads the oldest in-flight batch's replies and settles it. When it is left unsettled, every
    /// later batch in flight is settled too (its replies must be read before the connection is used
    /// again), and then what is left is kept: in the buffer (each row replaced by its remainder), or
    /// without one retried in memory, oldest first.
    /// Returns whether it was settled.
    @discardableResult
    mutating func finishOldest() -> Bool {
        guard !inFlight.isEmpty else { return true }
        // Once settled (acknowledged, replaced or left in the buffer), the rows taken off the wire
        // here may be dropped again.
        var settledRows: [Int64] = []
        defer { for id in settledRows { backlog?.doneSending(id) } }
        var first = inFlight.removeFirst()
        if let id = first.id { settledRows.append(id) }
        let error = settle(&first, feedBreaker: true)
        guard error != nil || first.pending.hasSuspects else {
            delivered(first)
            return true
        }
        // Later batches went out on the same connection; the breaker counts them with this one.
        // (Duplicate replies are verified once nothing is outstanding on the connection.)
        var unsettled = [first]
        while !inFlight.isEmpty {
            var next = inFlight.removeFirst()
            if let id = next.id { settledRows.append(id) }
            if settle(&next, feedBreaker: false) == nil, !next.pending.hasSuspects {
                delivered(next)
            } else {
                unsettled.append(next)
            }
        }
        for var f in unsettled {
            if f.pending.hasSuspects {
                let counters = sender.verifySuspects(&f.pending)
                stats.update { $0.counters += counters }
            }
            if f.pending.isComplete, f.pending.moved.isEmpty {
                delivered(f)
                continue
            }
            // Records Redis refused go to the encode stage for new IDs (see `PendingBatch.moved`).
            let moved = f.pending.takeMoved()
            guard let backlog, let id = f.id else {
                if let moved { upstream.requeueInMemory(moved) }
                retryInMemory(&f.pending)
                continue
            }
            let condition = "cannot update the spill buffer (the batch stays there and is sent again; explicit IDs make that harmless)"
            do {
                let rest = f.pending.remainder()
                if let moved {
                    // One transaction: the row becomes what is left, and the refused records wait
                    // for their new IDs.
                    try backlog.requeue(id: id, remainder: rest, moved: moved, now: clock.wallNow())
                } else {
                    try backlog.replace(id: id, with: rest)
                }
                // A batch sent from memory now waits in the buffer; a replayed one was counted when
                // it first waited there (or is an earlier run's backlog).
                if !f.replay { stats.update { $0.spilled += Int64(rest.recordCount) } }
                stateDirty = true
                episodes.recovered(condition, logger: logger, now: clock.now())
            } catch {
                // The row keeps the records with their old IDs: sent again, a refused one is
                // answered "equal or smaller", found not written, and moved then.
                episodes.failed(condition, error: "\(error)", logger: logger, now: clock.now())
            }
        }
        return error == nil
    }

    /// A batch Redis acknowledged all of: its row is deleted (soon), and a replayed one may have
    /// been the backlog's last.
    mutating func delivered(_ f: InFlight) {
        if let id = f.id { backlog?.acknowledgeLater(id: id) }
        if f.replay { noteBacklogReplayed() }
    }

    /// Settles every batch in flight.
    mutating func drainInFlight() {
        while !inFlight.isEmpty { finishOldest() }
    }

    var acknowledgementsPending: Bool { backlog?.hasAcknowledgements ?? false }

    mutating func flushAcknowledgements() {
        let condition = "cannot delete delivered batches from the spill buffer (they are sent again at the next start; explicit IDs make that harmless)"
        do {
            try backlog?.flushAcknowledgements()
            episodes.recovered(condition, logger: logger, now: clock.now())
        } catch {
            episodes.failed(condition, error: "\(error)", logger: logger, now: clock.now())
        }
        noteDisk()
    }

    /// Logs the spill buffer's file system filling (its reserve released so that deletes still
    /// work) and the reserve coming back, once each per episode.
    mutating func noteDisk() {
        guard let backlog else { return }
        let held = backlog.reserveHeld
        guard held != reserveHeld else { return }
        reserveHeld = held
        if held {
            logger.notice("the spill buffer's file system has room again; its reserve is allocated again", metadata: ["buffer.reserve": "\(backlog.path.dropLast("buffer.sqlite".count))reserve"])
        } else {
            logger.error("the spill buffer's file system is full: its reserve was released so that delivered batches can still be deleted; tailed lines wait in their files and metrics are dropped per [buffer] when_full until there is room (logged once per episode)",
                         metadata: ["agent.data_dir": "\(backlog.path.dropLast("/buffer.sqlite".count))"])
        }
        stateDirty = true
    }

    /// Logs a full buffer once per episode (the encode stage flags it; an episode ends when the
    /// backlog is gone).
    mutating func noteBufferFull() {
        if stats.snapshot.bufferFullEpisode {
            stats.update { $0.bufferFullEpisode = false }
            if !fullLogged {
                logger.error("the spill buffer is full: records are dropped per [buffer] when_full (logged once per episode; status shows the counts)")
                fullLogged = true
            }
        } else if !hasBacklog {
            fullLogged = false
        }
    }

    /// One attempt; feeds the breaker. Returns the error that left the batch unsettled, if any.
    mutating func send(_ pending: inout PendingBatch, replay: Bool) -> String? {
        // (Only without a spill buffer: nothing to delete meanwhile.)
        let (counters, error) = sender.attempt(&pending)
        record(counters, error, complete: pending.isComplete, replay: replay, feedBreaker: true)
        return error
    }

    /// Reads an in-flight batch's replies and records the outcome.
    mutating func settle(_ f: inout InFlight, feedBreaker: Bool) -> String? {
        let (counters, error) = sender.finish(&f.pending, f.attempt)
        record(counters, error, complete: f.pending.isComplete, replay: f.replay, feedBreaker: feedBreaker)
        return error
    }

    /// Counts an attempt's outcome and, unless it went out with a failed attempt already counted,
    /// feeds the breaker.
    mutating func record(_ counters: WriteCounters, _ error: String?, complete: Bool, replay: Bool, feedBreaker: Bool) {
        let now = clock.now()
        stats.update {
            if replay {
                $0.replayed += counters.written
                var c = counters
                c.written = 0
                $0.counters += c
            } else {
                $0.counters += counters
            }
            if complete { $0.batches += 1 }
            if let error {
                // A batch that went out behind a failed one failed with it: the first error is
                // the one to report.
                if feedBreaker {
                    $0.failedAttempts += 1
                    $0.lastError = error
                    $0.lastErrorAt = clock.wallNow()
                }
            } else {
                $0.lastSuccessAt = clock.wallNow()
            }
        }
        // (Records written or replayed: a batch of duplicates or refused records is not one.)
        if counters.written > 0, !deliveredOnce {
            deliveredOnce = true
            stateDirty = true
        }
        noteRejections()
        guard feedBreaker else { return }
        let before = breaker.state
        if let error, ReplyErrorKind.isCredentials(error) {
            // Retrying soon cannot mend it: the breaker opens at once, and one line names the fix.
            breaker.trip(now: now, jitter: jitter())
            episodes.failed(Self.credentialsCondition, error: error, logger: logger, now: clock.now())
            if !credentialsFailing { stateDirty = true }
            credentialsFailing = true
            lastLoggedError = error
        } else if let error {
            breaker.recordFailure(now: now, jitter: jitter())
            if credentialsFailing { stateDirty = true }
            credentialsFailing = false
            if error != lastLoggedError {
                logger.warning("Redis write failed", metadata: ["error": "\(error)", "breaker.state": "\(breaker.state.rawValue)"])
                lastLoggedError = error
            }
        } else {
            breaker.recordSuccess(now: now)
            episodes.recovered(Self.credentialsCondition, logger: logger, now: clock.now())
            if credentialsFailing { stateDirty = true }
            credentialsFailing = false
            if lastLoggedError != nil { logger.notice("Redis is taking writes again") }
            lastLoggedError = nil
        }
        if breaker.state != before {
            logger.notice("circuit breaker \(breaker.state.rawValue)", metadata: ["breaker.failures": "\(breaker.consecutiveFailures)"])
            stateDirty = true
        }
    }

    /// Saves the records Redis refused for good, per key, for `status` (rare: only when some were).
    mutating func noteRejections() {
        let taken = sender.takeRejections()
        guard !taken.isEmpty, let backlog else { return }
        do {
            try backlog.addRejected(taken.map { ($0.key, $0.rejection.records, $0.rejection.reply) }, now: clock.wallNow())
            episodes.recovered("cannot save the rejected records' keys", logger: logger, now: clock.now())
        } catch {
            episodes.failed("cannot save the rejected records' keys", error: "\(error)", logger: logger, level: .warning, now: clock.now())
        }
    }

    /// Without a spill buffer: the old behaviour, retry with backoff until Redis takes the batch.
    /// At shutdown it stops retrying; what Redis did not take is counted as dropped and logged.
    mutating func retryInMemory(_ pending: inout PendingBatch) {
        var backoff: Int64 = 100_000_000
        while !pending.isComplete, !upstream.isStopping {
            upstream.pause(backoff)
            backoff = min(backoff * 2, 5_000_000_000)
            _ = send(&pending, replay: false)
            if let moved = pending.takeMoved() { upstream.requeueInMemory(moved) }
        }
        if !pending.isComplete {
            let left = Int64(pending.batch.recordCount - pending.settledRecords)
            stats.update { $0.dropped += left }
            logger.error("stopping with records Redis did not take and no spill buffer to keep them; they are dropped", metadata: ["writer.records": "\(left)"])
        }
    }

    // MARK: replay

    func replayDue() -> Bool {
        let now = clock.now()
        return breaker.isAttemptDue(now: now) && now >= replayBudgetAt
    }

    /// Sends the oldest batches (up to `replay_batch_size` records). Stops at the first failure.
    mutating func replayStep() {
        // Replayed batches go out two at a time like direct ones (the next is written while Redis
        // works on the one before, and delivered rows are deleted meanwhile); a direct batch on the
        // wire is settled first.
        if inFlight.contains(where: { !$0.replay }) { drainInFlight() }
        guard let backlog, !backlog.isEmpty else { return }
        let now = clock.now()
        guard now >= replayBudgetAt, breaker.allowsAttempt(now: now) else { return }
        if breaker.state == .halfOpen {
            // The PING uses the connection on its own.
            drainInFlight()
            if let error = sender.ping() {
                // A failed probe is a failed attempt like any: its error is the latest (status
                // shows it, and why it fails may have changed since the breaker opened: Redis back
                // wanting a password, a certificate expired), and refused credentials are named.
                record(WriteCounters(), error, complete: false, replay: true, feedBreaker: true)
                stateDirty = true
                return
            }
        }
        let limit = settings.replayBatchSize
        let (batches, unreadable): ([(id: Int64, batch: EncodedBatch)], [Spool.Unreadable])
        let readCondition = "cannot read the spill buffer"
        do {
            // The rows after those on the wire, as many as make `replay_batch_size` records.
            (batches, unreadable) = try backlog.oldestBatches(limit: max(1, limit / max(1, settings.batchSize)) + 1,
                                                            after: inFlight.last?.id ?? 0, upTo: replayableUpTo, records: Int64(limit))
            episodes.recovered(readCondition, logger: logger, now: clock.now())
        } catch {
            episodes.failed(readCondition, error: "\(error)", logger: logger, now: clock.now())
            noteDisk()
            return
        }
        if !unreadable.isEmpty {
            // Moved out of the backlog (kept, with the reason) so that replay goes on past them.
            do {
                try backlog.setAside(unreadable, now: clock.wallNow())
                for row in unreadable {
                    logger.error("a spilled batch cannot be decoded; it was set aside in the buffer's unreadable_batches table and replay goes on without it",
                                 metadata: ["buffer.row": "\(row.id)", "buffer.reason": "\(row.reason)", "buffer.path": "\(backlog.path)"])
                }
                stateDirty = true
            } catch {
                logger.error("a spilled batch cannot be decoded, nor set aside", metadata: ["buffer.row": "\(unreadable[0].id)", "error": "\(error)"])
            }
            if batches.isEmpty { return }
        }
        var sent = 0
        for (id, batch) in batches {
            if sent > 0, sent + batch.recordCount > limit { break }
            if inFlightIsFull, !finishOldest() { return }
            begin(id: id, batch, replay: true)
            sent += batch.recordCount
            stateDirty = true
        }
        let t = clock.now()
        if replayWindowStart == 0 { replayWindowStart = now }
        replayWindowRecords += Int64(sent)
        if t - replayWindowStart >= 1_000_000_000 {
            replayRate = Double(replayWindowRecords) * 1e9 / Double(t - replayWindowStart)
            replayWindowStart = t
            replayWindowRecords = 0
        }
        if let rate = settings.replayRate, sent > 0 {
            replayBudgetAt = clock.now() + Int64(sent) * 1_000_000_000 / Int64(rate)
        }
    }

    /// After a replayed batch was delivered: when it was the last of the backlog, says so.
    mutating func noteBacklogReplayed() {
        guard let backlog, backlog.isEmpty, replayRate > 0 || replayWindowStart > 0 else { return }
        logger.notice("the backlog is replayed; writing directly again")
        replayRate = 0
        replayWindowStart = 0
        replayWindowRecords = 0
    }

    // MARK: state

    /// The breaker and the backlog, for the internal input and `/metrics` (every pass of the send
    /// loop, so at least every second).
    func publishFigures() {
        let state = breaker.state.rawValue
        let totals = backlog?.totals
        stats.update {
            $0.breakerState = state
            $0.backlogRecords = totals?.records ?? 0
            $0.backlogBytes = totals?.bytes ?? 0
        }
    }

    /// Saves the agent's state for `status`: when forced, after a change, and at least every 5 s.
    mutating func saveState(force: Bool) {
        publishFigures()
        guard let backlog else { return }
        let now = clock.now()
        guard force || stateDirty || now - lastSave >= 5_000_000_000 else { return }
        let s = stats.snapshot
        let wallNow = clock.wallNow()
        // Open or half-open: since the outage began (the first opening), not the latest probe.
        if s.lastSuccessAt != nil {
            carriedOutageSince = nil
            carriedFailingSince = nil
        }
        var sinceWall = wallNow - (now - (breaker.outageSince ?? breaker.since))
        if breaker.state != .closed, let carried = carriedOutageSince { sinceWall = min(sinceWall, carried) }
        state.breaker = AgentState.Breaker(state: breaker.state, sinceNs: sinceWall, consecutiveFailures: Int64(breaker.consecutiveFailures))
        state.counters.written = s.counters.written
        state.counters.spilled = s.spilled
        state.counters.replayed = s.replayed
        state.counters.dropped = s.dropped + upstream.queueDropped
        state.counters.duplicates = s.counters.duplicates
        state.counters.rejected = s.counters.rejected
        state.counters.collected = upstream.collected
        state.counters.inputErrors = upstream.inputErrors
        state.updatedNs = wallNow
        // To 0.1 record/s (as it was saved as text before).
        state.replayRate = Double(String(format: "%.1f", hasBacklog && breaker.state == .closed ? replayRate : 0)) ?? 0
        state.pid = getpid()
        state.run = AgentState.Run(id: AgentRun.id, startedNs: AgentRun.startedNs)
        // The last error: this run's latest, else the one saved before (an earlier run's).
        if let e = s.lastError {
            var last = state.lastError ?? AgentState.LastError(message: e)
            last.message = e
            if let t = s.lastErrorAt { last.atNs = t }
            // Which run the error belongs to, and when its run of failures (the outage) began.
            last.run = AgentRun.id
            if let first = breaker.failureStreakSince { last.firstFailureNs = min(wallNow - (now - first), carriedFailingSince ?? .max) }
            state.lastError = last
        }
        state.lastError?.kind = credentialsFailing ? .auth : .transient
        if let t = s.lastSuccessAt { state.lastSuccessNs = t }
        // Per input: its last collection, duration, errors and records (status's "inputs").
        if let figures = upstream.inputFigures { state.inputs = figures }
        do {
            try backlog.saveState(state)
            lastSave = now
            stateDirty = false
            episodes.recovered("cannot save the agent state", logger: logger, now: clock.now())
        } catch {
            // Tried again at the next save, not at once.
            lastSave = now
            stateDirty = false
            episodes.failed("cannot save the agent state", error: "\(error)", logger: logger, level: .warning, now: clock.now())
        }
    }
}

/// Opens the spill buffer in `directory` (nil when it cannot be opened: the agent then runs
/// without one, and tail inputs do not start).
public func openSpillBuffer(config: Config, directory: String, logger: Logger) -> Spool? {
    var options = SpoolOptions()
    options.maxBytes = config.survive.maxBytes
    options.maxAge = config.survive.maxAge
    options.whenFull = WhenFull(rawValue: config.survive.whenFull) ?? .dropOldest
    options.synchronousFull = config.survive.synchronous == "full"
    do {
        let s = try Spool(directory: directory, options: options)
        if let aside = s.movedAside {
            logger.error("the spill buffer could not be read; it was moved aside and a new one created", metadata: ["buffer.moved_to": "\(aside)"])
        }
        if !s.isEmpty {
            logger.notice("a backlog from an earlier run will be replayed", metadata: ["buffer.records": "\(s.totals.records)", "buffer.batches": "\(s.totals.batches)"])
        }
        return s
    } catch {
        logger.critical("cannot open the spill buffer; running without one (batches Redis refuses are retried in memory)", metadata: ["error": "\(error)"])
        return nil
    }
}

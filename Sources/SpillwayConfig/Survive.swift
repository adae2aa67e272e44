import SpillwayCore

/// `[breaker]`, `[buffer]` and `[status]`.
public struct SurviveConfig: Sendable, Equatable {
    public var breaker = CircuitBreaker.Settings()
    /// `[buffer] max_bytes`, default 1GiB.
    public var maxBytes: Int64 = 1 << 30
    /// `[buffer] max_age`, nanoseconds; nil keeps batches until replayed.
    public var maxAge: Int64?
    /// `[buffer] when_full`: "drop_oldest" (default) or "drop_newest".
    public var whenFull = "drop_oldest"
    /// `[buffer] synchronous`: "normal" (default) or "full".
    public var synchronous = "normal"
    /// `[buffer] replay_batch_size`: records per replay pipeline, default 1000.
    public var replayBatchSize = 1000
    /// `[buffer] replay_rate`: records/s at most while replaying; nil = as fast as Redis takes them.
    public var replayRate: Int?
    /// `[status] warn_records`: `status --check` warns above this backlog. Default 100000.
    public var warnRecords: Int64 = 100_000
    /// `[status] critical_open`: `status --check` is critical when the breaker is open longer. Default 5m.
    public var criticalOpen: Int64 = 300_000_000_000

    public init() {}

    static func readBreaker(_ r: inout OptionReader, into c: inout SurviveConfig) {
        c.breaker.failureThreshold = r.int("failure_threshold", default: c.breaker.failureThreshold, range: 1...1_000_000)
        c.breaker.openTimeout = r.duration("open_timeout", default: c.breaker.openTimeout, minimum: 1_000_000)
        c.breaker.maxOpenTimeout = r.duration("max_open_timeout", default: c.breaker.maxOpenTimeout, minimum: 1_000_000)
        if c.breaker.maxOpenTimeout < c.breaker.openTimeout {
            r.error("max_open_timeout", "max_open_timeout is below open_timeout", fix: "use a max_open_timeout of at least \(Units.formatDuration(c.breaker.openTimeout))")
        }
    }

    static func readBuffer(_ r: inout OptionReader, into c: inout SurviveConfig) {
        c.maxBytes = r.size("max_bytes", default: c.maxBytes, minimum: 64 << 10)
        c.maxAge = r.optionalDuration("max_age", minimum: 1_000_000_000) ?? c.maxAge
        let whenFull = r.string("when_full", default: c.whenFull)
        if ["drop_oldest", "drop_newest"].contains(whenFull) { c.whenFull = whenFull } else {
            r.error("when_full", "unknown policy \"\(whenFull)\"", fix: "use \"drop_oldest\" or \"drop_newest\"")
        }
        let sync = r.string("synchronous", default: c.synchronous)
        if ["normal", "full"].contains(sync) { c.synchronous = sync } else {
            r.error("synchronous", "unknown mode \"\(sync)\"", fix: "use \"normal\" or \"full\"")
        }
        c.replayBatchSize = r.int("replay_batch_size", default: c.replayBatchSize, range: 1...1_000_000)
        if r.has("replay_rate") { c.replayRate = r.int("replay_rate", default: 0, range: 1...100_000_000) }
    }

    static func readStatus(_ r: inout OptionReader, into c: inout SurviveConfig) {
        c.warnRecords = Int64(r.int("warn_records", default: Int(c.warnRecords), range: 0...Int(Int32.max)))
        c.criticalOpen = r.duration("critical_open", default: c.criticalOpen, minimum: 1_000_000_000)
    }
}

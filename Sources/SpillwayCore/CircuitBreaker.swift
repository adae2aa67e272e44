/// The circuit breaker around the Redis writer: a pure state machine. Time and randomness come from
/// the caller, so tests drive it on a manual clock.
///
/// closed --(failure_threshold consecutive failures)--> open --(backoff elapsed)--> half_open
/// half_open --(probe and one batch succeed)--> closed;  half_open --(failure)--> open, next backoff.
/// Backoffs start at `openTimeout` and double up to `maxOpenTimeout`, each with up to ±20 % jitter
/// (never above the maximum).
public struct CircuitBreaker: Sendable, Equatable {
    public enum State: String, Sendable, Codable { case closed, open, halfOpen = "half_open" }

    public struct Settings: Sendable, Equatable {
        public var failureThreshold: Int = 3
        public var openTimeout: Int64 = 1_000_000_000
        public var maxOpenTimeout: Int64 = 30_000_000_000
        public init() {}
    }

    public let settings: Settings
    public private(set) var state: State = .closed
    /// When the current state began (nanoseconds, the caller's clock).
    public private(set) var since: Int64
    /// When the breaker last left closed (the outage's start), while it is open or half-open.
    public private(set) var outageSince: Int64?
    public private(set) var consecutiveFailures = 0
    /// When the latest run of consecutive failures began: its first failure (the caller's clock).
    /// Kept after a success, as the start of the failures the last error belongs to.
    public private(set) var failureStreakSince: Int64?
    /// While open: when the next probe may happen.
    public private(set) var retryAt: Int64 = 0
    /// The backoff the next opening will use (before jitter).
    public private(set) var nextBackoff: Int64

    public init(settings: Settings = Settings(), now: Int64) {
        self.settings = settings
        since = now
        nextBackoff = settings.openTimeout
    }

    /// Whether `allowsAttempt(now:)` would say yes, without moving to half_open.
    public func isAttemptDue(now: Int64) -> Bool {
        state != .open || now >= retryAt
    }

    /// Whether a write may be tried now: always while closed; while open, once the backoff elapsed
    /// (this moves to half_open: the caller PINGs, then sends one batch).
    public mutating func allowsAttempt(now: Int64) -> Bool {
        guard isAttemptDue(now: now) else { return false }
        switch state {
        case .closed, .halfOpen: return true
        case .open:
            state = .halfOpen
            since = now
            return true
        }
    }

    public mutating func recordSuccess(now: Int64) {
        consecutiveFailures = 0
        if state != .closed {
            state = .closed
            since = now
        }
        outageSince = nil
        nextBackoff = settings.openTimeout
    }

    /// `jitter` in [-1, 1] scales the ±20 % spread of the backoff.
    public mutating func recordFailure(now: Int64, jitter: Double) {
        if consecutiveFailures == 0 { failureStreakSince = now }
        consecutiveFailures += 1
        switch state {
        case .closed:
            if consecutiveFailures >= settings.failureThreshold { open(now: now, jitter: jitter) }
        case .halfOpen:
            open(now: now, jitter: jitter)
        case .open:
            break
        }
    }

    /// A failure that retrying soon cannot mend (refused credentials, an ACL that forbids the
    /// writes): opens the breaker at once, whatever the threshold.
    public mutating func trip(now: Int64, jitter: Double) {
        consecutiveFailures += 1
        if state != .open { open(now: now, jitter: jitter) }
    }

    private mutating func open(now: Int64, jitter: Double) {
        if outageSince == nil { outageSince = now }
        let base = nextBackoff
        let spread = Double(base) * 0.2 * max(-1, min(1, jitter))
        let backoff = min(settings.maxOpenTimeout, max(1, base + Int64(spread)))
        state = .open
        since = now
        retryAt = now + backoff
        nextBackoff = min(settings.maxOpenTimeout, base * 2)
    }
}

import SpillwayCore
import Testing
@testable import SpillwayAgent

/// A reload hands the breaker to the next writer: an open breaker stays open (same backoff and
/// outage start), but only under the same settings, and only once.
@Test func breakerCarriesOverAReloadUnderTheSameSettings() {
    var settings = CircuitBreaker.Settings()
    settings.failureThreshold = 2
    var breaker = CircuitBreaker(settings: settings, now: 0)
    breaker.recordFailure(now: 10, jitter: 0)
    breaker.recordFailure(now: 20, jitter: 0)
    #expect(breaker.state == .open)
    let carry = BreakerCarry()
    carry.keep(breaker)
    var other = settings
    other.failureThreshold = 5
    #expect(carry.take(settings: other) == nil)
    carry.keep(breaker)
    let taken = carry.take(settings: settings)
    #expect(taken == breaker && taken?.state == .open && taken?.outageSince == 20)
    #expect(carry.take(settings: settings) == nil)
}

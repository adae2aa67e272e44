import SpillwayAggregate
import Testing

@Suite struct ExactSums {
    @Test func cancellation() {
        var s = ExactSum()
        for v in [1e16, 1.0, -1e16] { s.add(v) }
        #expect(s.value == 1.0)
    }
}

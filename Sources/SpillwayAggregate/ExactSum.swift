/// The exact sum of doubles (Shewchuk's algorithm, as Python's `math.fsum`): the sum is kept as a
/// few non-overlapping doubles whose total is exactly the sum of every value added, so the order
/// values are added in, and how they were split between workers and merged, never changes the
/// result: `value` is the exact sum rounded once (to nearest, ties to even).
///
/// A sum that overflows on the way (values near ±1.8e308) is kept as ±infinity (or NaN when both
/// signs overflow), as a plain sum would give.
public struct ExactSum: Sendable, Equatable {
    /// Non-overlapping, increasing in magnitude, none zero.
    public private(set) var partials: [Double] = []

    public init() {}

    /// From stored partials (as `partials` gave them).
    public init(partials: [Double]) {
        for p in partials { add(p) }
    }

    public mutating func add(_ value: Double) {
        var x = value
        if !x.isFinite || partials.last.map({ !$0.isFinite }) == true {
            // A special value, or one already: it decides the sum (inf + -inf is NaN).
            let special = (partials.last.map { $0.isFinite ? 0 : $0 } ?? 0) + (x.isFinite ? 0 : x)
            partials = [special]
            return
        }
        var i = 0
        for j in partials.indices {
            var y = partials[j]
            if abs(x) < abs(y) { swap(&x, &y) }
            let hi = x + y
            if !hi.isFinite {
                partials = [hi]
                return
            }
            let lo = y - (hi - x)
            if lo != 0 {
                partials[i] = lo
                i += 1
            }
            x = hi
        }
        partials.removeSubrange(i...)
        if x != 0 { partials.append(x) }
    }

    public mutating func add(_ other: ExactSum) {
        for p in other.partials { add(p) }
    }

    /// The sum, rounded once.
    public var value: Double {
        var n = partials.count
        guard n > 0 else { return 0 }
        n -= 1
        var hi = partials[n]
        guard hi.isFinite else { return hi }
        var lo = 0.0
        while n > 0 {
            let x = hi
            n -= 1
            let y = partials[n]
            hi = x + y
            let yr = hi - x
            lo = y - yr
            if lo != 0 { break }
        }
        // Half-even rounding of hi + lo when what is below lo has lo's sign: then hi + 2·lo, if
        // exact, is the correctly rounded sum.
        if n > 0, (lo < 0 && partials[n - 1] < 0) || (lo > 0 && partials[n - 1] > 0) {
            let y = lo * 2
            let x = hi + y
            let yr = x - hi
            if y == yr { hi = x }
        }
        return hi
    }
}

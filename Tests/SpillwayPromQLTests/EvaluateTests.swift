import SpillwayPromQL
import Testing

/// Series in memory; records what it was asked.
final class Fixed: SeriesSource {
    let series: [Series]
    let windowsAnswer: [Series]?
    var asked: [(from: Int64, to: Int64)] = []
    var windowsAsked: [(RangeFunction, Int64, Int64, Int64)] = []

    init(_ series: [Series], windows: [Series]? = nil) {
        self.series = series
        windowsAnswer = windows
    }

    func samples(_ selector: Selector, from: Int64, to: Int64) throws -> [Series] {
        asked.append((from, to))
        return series.filter { s in selector.matches(s.labels) }
            .map { Series(labels: $0.labels, samples: $0.samples.filter { $0.t >= from && $0.t <= to }) }
    }

    func windows(_ selector: Selector, function: RangeFunction, start: Int64, end: Int64, step: Int64) throws -> [Series]? {
        windowsAsked.append((function, start, end, step))
        return windowsAnswer
    }

    func labelSets(_ selectors: [Selector], from: Int64, to: Int64) throws -> [[String: String]] {
        series.filter { s in
            (selectors.isEmpty || selectors.contains { $0.matches(s.labels) }) && s.samples.contains { $0.t >= from && $0.t <= to }
        }.map(\.labels)
    }
}

private func counter(_ name: String, host: String, _ values: [(Int64, Double)]) -> Series {
    Series(labels: ["__name__": name, "host": host], samples: values.map { Sample($0.0 * 1000, $0.1) })
}

private func vector(_ v: QueryValue) -> [Series] {
    if case .vector(let s) = v { return s }
    Issue.record("not a vector: \(v)")
    return []
}

@Suite struct Evaluating {
    let every10s = counter("c_total", host: "a", (0...60).map { (Int64($0) * 10, Double($0) * 10) })

    @Test func selectorTakesTheNewestSampleWithinTheLookback() throws {
        let src = Fixed([Series(labels: ["__name__": "m", "host": "a"], samples: [Sample(10_000, 1), Sample(20_000, 2), Sample(30_000, 3)])])
        let e = Evaluator()
        let q = try PromQL.parse("m")
        #expect(vector(try e.evaluate(q, start: 25_000, end: 25_000, step: 0, source: src)) == [Series(labels: ["__name__": "m", "host": "a"], samples: [Sample(25_000, 2)])])
        #expect(vector(try e.evaluate(q, start: 30_000, end: 30_000, step: 0, source: src))[0].samples == [Sample(30_000, 3)])
        // 5 minutes after the last sample: still there; a millisecond later: gone.
        #expect(vector(try e.evaluate(q, start: 329_999, end: 329_999, step: 0, source: src))[0].samples == [Sample(329_999, 3)])
        #expect(vector(try e.evaluate(q, start: 330_000, end: 330_000, step: 0, source: src)).isEmpty)
        // A range query: a point per step where there is one.
        let r = vector(try e.evaluate(q, start: 0, end: 40_000, step: 10_000, source: src))
        #expect(r[0].samples == [Sample(10_000, 1), Sample(20_000, 2), Sample(30_000, 3), Sample(40_000, 3)])
        #expect(src.asked.last! == (0 - 300_000 + 1, 40_000))
    }

    @Test func overTimeFunctionsUseTheHalfOpenWindow() throws {
        let src = Fixed([Series(labels: ["__name__": "m", "host": "a"], samples: [Sample(0, 4), Sample(10_000, 1), Sample(20_000, 7), Sample(30_000, 2)])])
        let e = Evaluator()
        // Window (0, 30000]: 1, 7, 2 (the sample at 0 is out).
        let want: [(String, Double)] = [("avg_over_time", 10.0 / 3), ("min_over_time", 1), ("max_over_time", 7), ("sum_over_time", 10),
                                        ("count_over_time", 3), ("last_over_time", 2)]
        for (f, v) in want {
            let r = vector(try e.evaluate(try PromQL.parse("\(f)(m[30s])"), start: 30_000, end: 30_000, step: 0, source: src))
            // last_over_time keeps the metric name, as in Prometheus; the others drop it.
            let labels = f == "last_over_time" ? ["__name__": "m", "host": "a"] : ["host": "a"]
            #expect(r == [Series(labels: labels, samples: [Sample(30_000, v)])], "\(f)")
        }
        let none = vector(try e.evaluate(try PromQL.parse("count_over_time(m[5s])"), start: 60_000, end: 60_000, step: 0, source: src))
        #expect(none.isEmpty)
    }

    @Test func rateAndIncreaseExtrapolateAsPrometheus() throws {
        let src = Fixed([every10s])
        let e = Evaluator()
        // 1 per second: samples 10..60 s in (0, 60 s]; extrapolated to the window's start.
        let rate = vector(try e.evaluate(try PromQL.parse("rate(c_total[1m])"), start: 60_000, end: 60_000, step: 0, source: src))
        #expect(rate == [Series(labels: ["host": "a"], samples: [Sample(60_000, 1)])])
        let inc = vector(try e.evaluate(try PromQL.parse("increase(c_total[1m])"), start: 60_000, end: 60_000, step: 0, source: src))
        #expect(inc[0].samples == [Sample(60_000, 60)])
        // A reset: 10, 20, 5, 15 at 10..40 s: 25 counted, extrapolated by 40/30.
        let reset = Fixed([counter("c_total", host: "a", [(0, 0), (10, 10), (20, 20), (30, 5), (40, 15)])])
        let r = vector(try e.evaluate(try PromQL.parse("rate(c_total[40s])"), start: 40_000, end: 40_000, step: 0, source: reset))
        #expect(abs(r[0].samples[0].v - 25.0 * 40 / 30 / 40) < 1e-12)
        // Far from the window's start (30 s, over 1.1 intervals): half an interval, then the zero
        // point (10 s) does not shorten it: 30 × (30 + 5) / 30 = 35 (Prometheus 3).
        let late = Fixed([counter("c_total", host: "a", [(30, 10), (40, 20), (50, 30), (60, 40)])])
        #expect(vector(try e.evaluate(try PromQL.parse("increase(c_total[1m])"), start: 60_000, end: 60_000, step: 0, source: late))[0].samples == [Sample(60_000, 35)])
        // A counter near zero: extrapolated back to its zero point (2 s before the first sample),
        // not half an interval: 20 × (20 + 2) / 20 = 22, from 2, 12, 22 at 40..60 s in (20 s, 60 s].
        let zero = Fixed([counter("c_total", host: "a", [(40, 2), (50, 12), (60, 22)])])
        let z = vector(try e.evaluate(try PromQL.parse("increase(c_total[40s])"), start: 60_000, end: 60_000, step: 0, source: zero))
        #expect(abs(z[0].samples[0].v - 22) < 1e-9, "\(z)")
        // One sample: no rate.
        #expect(vector(try e.evaluate(try PromQL.parse("rate(c_total[10s])"), start: 40_000, end: 40_000, step: 0, source: reset)).isEmpty)
    }

    @Test func aggregationsGroupByTheLabelsNamed() throws {
        let src = Fixed([
            Series(labels: ["__name__": "m", "host": "a", "cpu": "0"], samples: [Sample(1000, 1)]),
            Series(labels: ["__name__": "m", "host": "a", "cpu": "1"], samples: [Sample(1000, 3)]),
            Series(labels: ["__name__": "m", "host": "b", "cpu": "0"], samples: [Sample(1000, 10)]),
        ])
        let e = Evaluator()
        func run(_ q: String) throws -> [Series] { vector(try e.evaluate(try PromQL.parse(q), start: 2000, end: 2000, step: 0, source: src)) }
        #expect(try run("sum by (host) (m)") == [Series(labels: ["host": "a"], samples: [Sample(2000, 4)]), Series(labels: ["host": "b"], samples: [Sample(2000, 10)])])
        #expect(try run("avg(m)") == [Series(labels: [:], samples: [Sample(2000, 14.0 / 3)])])
        #expect(try run("min(m) by (cpu)") == [Series(labels: ["cpu": "0"], samples: [Sample(2000, 1)]), Series(labels: ["cpu": "1"], samples: [Sample(2000, 3)])])
        #expect(try run("max(m)")[0].samples == [Sample(2000, 10)])
        #expect(try run("count by (host) (m{cpu=\"0\"})").map(\.samples) == [[Sample(2000, 1)], [Sample(2000, 1)]])
        #expect(try run("sum(m{host=\"none\"})").isEmpty)
    }

    @Test func windowsEqualToTheStepComeFromTheSource() throws {
        let pre = [Series(labels: ["__name__": "m", "host": "a"], samples: [Sample(60_000, 5), Sample(120_000, 6)])]
        let src = Fixed([], windows: pre)
        let r = vector(try Evaluator().evaluate(try PromQL.parse("avg_over_time(m[1m])"), start: 60_000, end: 120_000, step: 60_000, source: src))
        #expect(r == [Series(labels: ["host": "a"], samples: [Sample(60_000, 5), Sample(120_000, 6)])])
        #expect(src.windowsAsked.count == 1 && src.windowsAsked[0].0 == .avgOverTime && src.windowsAsked[0].3 == 60_000)
        #expect(src.asked.isEmpty)
        // A source that cannot: raw samples instead.
        let raw = Fixed([Series(labels: ["__name__": "m"], samples: [Sample(30_000, 1), Sample(90_000, 3)])])
        let r2 = vector(try Evaluator().evaluate(try PromQL.parse("avg_over_time(m[1m])"), start: 60_000, end: 120_000, step: 60_000, source: raw))
        #expect(r2 == [Series(labels: [:], samples: [Sample(60_000, 1), Sample(120_000, 3)])])
    }

    @Test func aVectorHoldsEachLabelSetOnce() throws {
        // Two metrics whose names a range function drops: the same labels twice.
        let src = Fixed([Series(labels: ["__name__": "a_x", "host": "h"], samples: [Sample(1000, 1)]),
                         Series(labels: ["__name__": "a_y", "host": "h"], samples: [Sample(1000, 2)])])
        #expect(throws: Evaluator.Failure("vector cannot contain metrics with the same labelset")) {
            try Evaluator().evaluate(try PromQL.parse(#"sum_over_time({host="h"}[1m])"#), start: 2000, end: 2000, step: 0, source: src)
        }
        // With the names kept, or summed into one, it is fine.
        #expect(vector(try Evaluator().evaluate(try PromQL.parse(#"{host="h"}"#), start: 2000, end: 2000, step: 0, source: src)).count == 2)
        #expect(vector(try Evaluator().evaluate(try PromQL.parse(#"sum({host="h"})"#), start: 2000, end: 2000, step: 0, source: src))[0].samples == [Sample(2000, 3)])
    }

    @Test func numbersAndLimits() throws {
        let src = Fixed([every10s, counter("c_total", host: "b", [(0, 1)])])
        #expect(try Evaluator().evaluate(try PromQL.parse("1+1"), start: 5, end: 5, step: 0, source: src) == .scalar([Sample(5, 2)]))
        #expect(throws: Evaluator.Failure("exceeded maximum resolution of 11000 points per timeseries. Try decreasing the query resolution (?step=XX)", badData: true)) {
            try Evaluator().evaluate(try PromQL.parse("c_total"), start: 0, end: 11_000_000, step: 1000, source: src)
        }
        #expect(throws: Evaluator.Failure("the query selects more than 1 series (max_series); narrow it with label matchers")) {
            try Evaluator(maxSeries: 1).evaluate(try PromQL.parse("c_total"), start: 0, end: 0, step: 0, source: src)
        }
        #expect(throws: Evaluator.Failure("the query reads more than 10 samples; shorten the range or narrow the selector")) {
            try Evaluator(maxSamples: 10).evaluate(try PromQL.parse("c_total"), start: 600_000, end: 600_000, step: 0, source: src)
        }
        #expect(throws: Evaluator.Failure("end timestamp must not be before start time")) {
            try Evaluator().evaluate(try PromQL.parse("c_total"), start: 10, end: 0, step: 1, source: src)
        }
    }
}

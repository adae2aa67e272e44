import Foundation

/// What `spillway aggregate` must have written, computed by the test on its own from the raw
/// streams (XRANGE, through `RESPClient`), for the default layout: streams `metrics:{host}:{name}`,
/// aggregate keys `agg:{host}:{name}:{field}:{agg}:{bucket}` then `:k=v` for each other tag.
/// A field is numeric when its text is a finite decimal number; a bucket starts at a multiple of its
/// length (ms since the epoch) and holds the entries whose `timestamp` falls in it.
public struct OfflineAggregates: Sendable {
    public struct Figures: Sendable {
        public var count = 0
        public var min = Double.infinity
        public var max = -Double.infinity
        /// Summed in entry order, plainly.
        public var sum = 0.0
    }

    /// Aggregate key → bucket start → value.
    public private(set) var expected: [String: [Int64: Double]] = [:]
    /// Entries read from the streams.
    public private(set) var entries = 0
    /// Figures per series and bucket (key without the aggregation part).
    public private(set) var figures: [String: [Int64: Figures]] = [:]

    public static let aggregations = ["avg", "min", "max", "sum", "count"]

    public init(client: RESPClient, streams: [String], buckets: [(ms: Int64, text: String)]) throws {
        for stream in streams {
            let parts = stream.split(separator: ":", maxSplits: 2).map(String.init)
            guard parts.count == 3 else { continue }
            let name = parts[2]
            var from = "-"
            for _ in 0..<100_000 {
                let reply = try client.call(["XRANGE", stream, from, "+", "COUNT", "1000"])
                guard let list = reply.array, !list.isEmpty else { break }
                for e in list {
                    guard let pair = e.array, pair.count == 2, let id = pair[0].string, let flat = pair[1].array else { continue }
                    entries += 1
                    var tags: [(String, String)] = []
                    var values: [(String, Double)] = []
                    var ts: Int64 = Int64(id.split(separator: "-")[0]) ?? 0
                    let lastTimestamp = Array(stride(from: 0, to: flat.count - 1, by: 2)).last { flat[$0].string == "timestamp" }
                    for i in stride(from: 0, to: flat.count - 1, by: 2) {
                        guard let f = flat[i].string, let v = flat[i + 1].string else { continue }
                        if i == lastTimestamp { ts = Int64(v) ?? ts }
                        else if f.hasPrefix("tag_"), f.count > 4 { tags.append((String(f.dropFirst(4)), v)) }
                        else if Self.isNumber(v), let d = Double(v) { values.append((f, d)) }
                    }
                    tags.sort { $0.0 < $1.0 }
                    let host = tags.first { $0.0 == "host" }?.1 ?? parts[1]
                    let suffix = tags.filter { $0.0 != "host" }.map { ":\($0.0)=\($0.1)" }.joined()
                    for b in buckets {
                        let start = Int64((Double(ts) / Double(b.ms)).rounded(.down)) * b.ms
                        for (f, v) in values {
                            let key = "agg:\(host):\(name):\(f):{agg}:\(b.text)\(suffix)"
                            var fig = figures[key, default: [:]][start, default: Figures()]
                            fig.count += 1
                            fig.min = Swift.min(fig.min, v)
                            fig.max = Swift.max(fig.max, v)
                            fig.sum += v
                            figures[key, default: [:]][start] = fig
                        }
                    }
                }
                from = "(" + (list.last!.array![0].string!)
            }
        }
        for (key, byStart) in figures {
            for (start, f) in byStart {
                for agg in Self.aggregations {
                    let v: Double = switch agg {
                    case "avg": f.sum / Double(f.count)
                    case "min": f.min
                    case "max": f.max
                    case "sum": f.sum
                    default: Double(f.count)
                    }
                    expected[key.replacingOccurrences(of: "{agg}", with: agg), default: [:]][start] = v
                }
            }
        }
    }

    /// A finite decimal number, as the agent writes numbers (not `true`, `inf`, text).
    static func isNumber(_ s: String) -> Bool {
        guard !s.isEmpty, s.allSatisfy({ "0123456789+-.eE".contains($0) }), s.contains(where: \.isNumber), let d = Double(s) else { return false }
        return d.isFinite
    }

    /// Every difference between what Redis holds (series labelled `spillway=aggregate`) and what is
    /// expected: a series missing or extra, a bucket missing or extra, a value off. Counts, minima
    /// and maxima must be equal; sums and averages equal within `tolerance` (relative), or exactly
    /// with `tolerance` 0. Empty when they agree.
    public func differences(client: RESPClient, tolerance: Double = 1e-9, limit: Int = 20) throws -> [String] {
        var out: [String] = []
        let index = try client.call(["TS.QUERYINDEX", "spillway=aggregate"])
        let actualKeys = Set((index.array ?? []).compactMap(\.string))
        let expectedKeys = Set(expected.keys)
        for k in expectedKeys.subtracting(actualKeys).sorted().prefix(limit) { out.append("missing series \(k)") }
        for k in actualKeys.subtracting(expectedKeys).sorted().prefix(limit) { out.append("extra series \(k)") }
        for key in expectedKeys.intersection(actualKeys).sorted() {
            guard out.count < limit else { break }
            let reply = try client.call(["TS.RANGE", key, "-", "+"])
            var actual: [Int64: Double] = [:]
            for s in reply.array ?? [] {
                guard let p = s.array, p.count == 2, let t = p[0].int, let v = p[1].string.flatMap(Double.init) else { continue }
                actual[t] = v
            }
            let want = expected[key]!
            for t in Set(want.keys).subtracting(actual.keys).sorted() { out.append("\(key): bucket \(t) missing (want \(want[t]!))") }
            for t in Set(actual.keys).subtracting(want.keys).sorted() { out.append("\(key): bucket \(t) extra (\(actual[t]!))") }
            let exact = key.contains(":count:") || key.contains(":min:") || key.contains(":max:")
            for (t, w) in want {
                guard let a = actual[t] else { continue }
                let ok = exact || tolerance == 0 ? a == w : abs(a - w) <= tolerance * Swift.max(1, abs(w))
                if !ok { out.append("\(key): bucket \(t) is \(a), want \(w)") }
            }
        }
        return Array(out.prefix(limit))
    }
}

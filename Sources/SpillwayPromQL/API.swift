/// The Prometheus HTTP API's read endpoints, with their JSON shapes, over a `SeriesSource`:
/// `/api/v1/query`, `/api/v1/query_range`, `/api/v1/series`, `/api/v1/labels`,
/// `/api/v1/label/<name>/values`, and the few Grafana asks for on the side
/// (`/api/v1/status/buildinfo`, `/api/v1/metadata`, `/api/v1/query_exemplars`, `/api/v1/rules`,
/// `/api/v1/alerts`). Errors have
/// Prometheus's shape: `{"status":"error","errorType":"bad_data","error":"…"}` with 400 for a bad
/// request or query, 422 when it cannot be evaluated, 503 when the source is unavailable.
public struct PrometheusAPI: Sendable {
    public var evaluator: Evaluator
    /// Series `/api/v1/series` and the label endpoints list at most (as `limit` does).
    public var maxSeries: Int { evaluator.maxSeries }

    public init(evaluator: Evaluator = Evaluator()) {
        self.evaluator = evaluator
    }

    public struct Response: Sendable, Equatable {
        public var status: Int
        public var body: [UInt8]
        public var text: String { String(decoding: body, as: UTF8.self) }
    }

    /// A source that cannot answer now (Redis down): 503 `unavailable`.
    public struct Unavailable: Error, CustomStringConvertible {
        public var description: String
        public init(_ d: String) { description = d }
    }

    /// Answers `path` with `parameters` (query string and form, in order); `now` in ms.
    public func handle(path: String, parameters: [(name: String, value: String)], now: Int64, source: some SeriesSource) -> Response {
        do {
            switch path {
            case "/api/v1/query": return try query(parameters, now: now, source: source)
            case "/api/v1/query_range": return try queryRange(parameters, source: source)
            case "/api/v1/series": return try series(parameters, now: now, source: source)
            case "/api/v1/labels": return try labels(parameters, now: now, source: source)
            case "/api/v1/status/buildinfo":
                return success(#"{"version":"2.45.0","revision":"spillway","branch":"","buildUser":"","buildDate":"","goVersion":""}"#)
            case "/api/v1/metadata": return success("{}")
            // Grafana's alerting view asks for the data source's rules and alerts: there are none.
            case "/api/v1/rules": return success(#"{"groups":[]}"#)
            case "/api/v1/alerts": return success(#"{"alerts":[]}"#)
            case "/api/v1/query_exemplars": return success("[]")
            default:
                if path.hasPrefix("/api/v1/label/"), path.hasSuffix("/values") {
                    let name = String(path.dropFirst("/api/v1/label/".count).dropLast("/values".count))
                    return try labelValues(name, parameters, now: now, source: source)
                }
                return failure(404, "not_found", "unknown endpoint \(path) (served: /api/v1/query, /api/v1/query_range, /api/v1/series, /api/v1/labels, /api/v1/label/<name>/values)")
            }
        } catch let e as BadRequest {
            return failure(400, "bad_data", e.message)
        } catch let e as ParseError {
            return failure(400, "bad_data", "invalid parameter \"query\": \(e)")
        } catch let e as Evaluator.Failure {
            return failure(e.badData ? 400 : 422, e.badData ? "bad_data" : "execution", e.description)
        } catch let e as Unavailable {
            return failure(503, "unavailable", e.description)
        } catch {
            return failure(422, "execution", "\(error)")
        }
    }

    struct BadRequest: Error {
        var message: String
        init(_ m: String) { message = m }
    }

    // MARK: endpoints

    func query(_ p: [(name: String, value: String)], now: Int64, source: some SeriesSource) throws -> Response {
        let expr = try PromQL.parse(try required("query", p))
        let t = try value("time", p).map { try Self.time($0, "time") } ?? now
        let result = try evaluator.evaluate(expr, start: t, end: t, step: 0, source: source)
        var out = #"{"status":"success","data":{"resultType":"#
        switch result {
        case .scalar(let samples):
            out += #""scalar","result":"#
            Self.point(samples.first ?? Sample(t, .nan), into: &out)
        case .vector(let series):
            out += #""vector","result":["#
            for (i, s) in series.enumerated() {
                if i > 0 { out += "," }
                out += #"{"metric":"#
                Self.labels(s.labels, into: &out)
                out += #","value":"#
                Self.point(s.samples.last ?? Sample(t, .nan), into: &out)
                out += "}"
            }
            out += "]"
        }
        out += "}}"
        return Response(status: 200, body: Array(out.utf8))
    }

    func queryRange(_ p: [(name: String, value: String)], source: some SeriesSource) throws -> Response {
        let expr = try PromQL.parse(try required("query", p))
        let start = try Self.time(try required("start", p), "start")
        let end = try Self.time(try required("end", p), "end")
        let stepText = try required("step", p)
        if let n = Double(stepText), n <= 0 {
            throw BadRequest("zero or negative query resolution step widths are not accepted. Try a positive integer")
        }
        guard let step = PromQL.duration(stepText) else {
            throw BadRequest("invalid parameter \"step\": cannot parse \"\(stepText)\" to a valid duration")
        }
        guard end >= start else { throw BadRequest("invalid parameter \"end\": end timestamp must not be before start time") }
        // Prometheus aligns nothing itself; Grafana sends start and end at multiples of the step.
        let result = try evaluator.evaluate(expr, start: start, end: end, step: step, source: source)
        let series: [Series] = switch result {
        case .scalar(let samples): [Series(labels: [:], samples: samples)]
        case .vector(let s): s
        }
        var out = #"{"status":"success","data":{"resultType":"matrix","result":["#
        for (i, s) in series.enumerated() {
            if i > 0 { out += "," }
            out += #"{"metric":"#
            Self.labels(s.labels, into: &out)
            out += #","values":["#
            for (j, sample) in s.samples.enumerated() {
                if j > 0 { out += "," }
                Self.point(sample, into: &out)
            }
            out += "]}"
        }
        out += "]}}"
        return Response(status: 200, body: Array(out.utf8))
    }

    func series(_ p: [(name: String, value: String)], now: Int64, source: some SeriesSource) throws -> Response {
        let selectors = try matchers(p)
        guard !selectors.isEmpty else { throw BadRequest("no match[] parameter provided") }
        let (from, to) = try window(p, now: now)
        let sets = try limited(try source.labelSets(selectors, from: from, to: to), p)
        var out = #"{"status":"success","data":["#
        for (i, l) in sets.enumerated() {
            if i > 0 { out += "," }
            Self.labels(l, into: &out)
        }
        out += "]}"
        return Response(status: 200, body: Array(out.utf8))
    }

    func labels(_ p: [(name: String, value: String)], now: Int64, source: some SeriesSource) throws -> Response {
        let (from, to) = try window(p, now: now)
        let sets = try source.labelSets(try matchers(p), from: from, to: to)
        let names = Set(sets.flatMap(\.keys)).sorted()
        return success(Self.stringArray(try limited(names, p)))
    }

    func labelValues(_ rawName: String, _ p: [(name: String, value: String)], now: Int64, source: some SeriesSource) throws -> Response {
        let name = Self.percentDecoded(rawName)
        guard !name.isEmpty, name.utf8.allSatisfy({ Parser.isIdent($0) }), let first = name.utf8.first, Parser.isIdentStart(first) else {
            throw BadRequest("invalid label name: \"\(name)\"")
        }
        let (from, to) = try window(p, now: now)
        let sets = try source.labelSets(try matchers(p), from: from, to: to)
        let values = Set(sets.compactMap { $0[name] }).sorted()
        return success(Self.stringArray(try limited(values, p)))
    }

    // MARK: parameters

    func value(_ name: String, _ p: [(name: String, value: String)]) -> String? {
        p.first { $0.name == name }.map(\.value)
    }

    func required(_ name: String, _ p: [(name: String, value: String)]) throws -> String {
        guard let v = value(name, p), !v.isEmpty else { throw BadRequest("invalid parameter \"\(name)\": missing") }
        return v
    }

    func matchers(_ p: [(name: String, value: String)]) throws -> [Selector] {
        try p.filter { $0.name == "match[]" }.map { m in
            let e: Expr
            do {
                e = try PromQL.parse(m.value)
            } catch {
                throw BadRequest("invalid parameter \"match[]\": \(error)")
            }
            guard case .selector(let s) = e else { throw BadRequest("invalid parameter \"match[]\": \(m.value) is not a series selector") }
            return s
        }
    }

    /// `start` and `end` of the series and label endpoints (default: all time up to now).
    func window(_ p: [(name: String, value: String)], now: Int64) throws -> (Int64, Int64) {
        let from = try value("start", p).map { try Self.time($0, "start") } ?? 0
        let to = try value("end", p).map { try Self.time($0, "end") } ?? now
        return (from, to)
    }

    /// At most `limit` (a parameter) and at most `maxSeries` items.
    func limited<T>(_ items: [T], _ p: [(name: String, value: String)]) throws -> [T] {
        var n = maxSeries
        if let l = value("limit", p), !l.isEmpty {
            guard let v = Int(l), v >= 0 else { throw BadRequest("invalid parameter \"limit\": cannot parse \"\(l)\" to a valid limit") }
            if v > 0 { n = min(n, v) }
        }
        return Array(items.prefix(n))
    }

    /// A Prometheus time parameter: Unix seconds (with a fraction) or RFC 3339; milliseconds.
    public static func time(_ s: String, _ name: String) throws -> Int64 {
        if let d = Double(s), d.isFinite, abs(d) < 1e13 { return Int64((d * 1000).rounded()) }
        if let t = rfc3339(s) { return t }
        throw BadRequest("invalid parameter \"\(name)\": cannot parse \"\(s)\" to a valid timestamp")
    }

    /// `2026-12-01T10:00:00Z`, `…T10:00:00.123+01:00`: milliseconds since the epoch.
    static func rfc3339(_ s: String) -> Int64? {
        let b = Array(s.utf8)
        func num(_ from: Int, _ n: Int) -> Int? {
            guard from + n <= b.count else { return nil }
            var v = 0
            for c in b[from..<from + n] {
                guard Parser.isDigit(c) else { return nil }
                v = v * 10 + Int(c - 48)
            }
            return v
        }
        guard b.count >= 20, b[4] == 45, b[7] == 45, b[10] | 0x20 == UInt8(ascii: "t"), b[13] == 58, b[16] == 58,
              let y = num(0, 4), let mo = num(5, 2), let d = num(8, 2), let h = num(11, 2), let mi = num(14, 2), let sec = num(17, 2),
              (1...12).contains(mo), (1...31).contains(d), h < 24, mi < 60, sec < 61 else { return nil }
        var i = 19
        var ms = 0
        if i < b.count, b[i] == UInt8(ascii: ".") {
            i += 1
            var digits = 0
            while i < b.count, Parser.isDigit(b[i]) {
                if digits < 3 { ms = ms * 10 + Int(b[i] - 48) }
                digits += 1
                i += 1
            }
            guard digits > 0 else { return nil }
            for _ in min(digits, 3)..<3 { ms *= 10 }
        }
        var offset = 0
        guard i < b.count else { return nil }
        if b[i] | 0x20 == UInt8(ascii: "z"), i + 1 == b.count {
            offset = 0
        } else if (b[i] == 43 || b[i] == 45), i + 6 == b.count, b[i + 3] == 58, let oh = num(i + 1, 2), let om = num(i + 4, 2) {
            offset = (oh * 60 + om) * 60 * (b[i] == 45 ? -1 : 1)
        } else {
            return nil
        }
        // Days from the civil date (Howard Hinnant's algorithm).
        let yy = mo <= 2 ? y - 1 : y
        let era = (yy >= 0 ? yy : yy - 399) / 400
        let yoe = yy - era * 400
        let doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146_097 + doe - 719_468
        let seconds = days * 86_400 + h * 3600 + mi * 60 + sec - offset
        return Int64(seconds) * 1000 + Int64(ms)
    }

    static func percentDecoded(_ s: String) -> String {
        var out: [UInt8] = []
        var it = Array(s.utf8)[...]
        while let c = it.popFirst() {
            if c == UInt8(ascii: "%"), it.count >= 2, let v = UInt8(String(decoding: it.prefix(2), as: UTF8.self), radix: 16) {
                out.append(v)
                it = it.dropFirst(2)
            } else {
                out.append(c)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    // MARK: JSON

    func success(_ data: String) -> Response {
        Response(status: 200, body: Array(#"{"status":"success","data":\#(data)}"#.utf8))
    }

    /// Prometheus's error shape, for answers the HTTP server gives itself (a timeout, too many
    /// requests at once, a body too large).
    public static func error(status: Int, message: String) -> Response {
        PrometheusAPI().failure(status, status == 503 ? "unavailable" : "bad_data", message)
    }

    func failure(_ status: Int, _ type: String, _ message: String) -> Response {
        var out = #"{"status":"error","errorType":""#
        out += type
        out += #"","error":"#
        Self.string(message, into: &out)
        out += "}"
        return Response(status: status, body: Array(out.utf8))
    }

    static func stringArray(_ items: [String]) -> String {
        var out = "["
        for (i, s) in items.enumerated() {
            if i > 0 { out += "," }
            string(s, into: &out)
        }
        return out + "]"
    }

    static func labels(_ l: [String: String], into out: inout String) {
        out += "{"
        for (i, kv) in l.sorted(by: { $0.key < $1.key }).enumerated() {
            if i > 0 { out += "," }
            string(kv.key, into: &out)
            out += ":"
            string(kv.value, into: &out)
        }
        out += "}"
    }

    /// `[1700000000.123,"1.5"]`: seconds with up to 3 decimals, the value as Prometheus formats it.
    static func point(_ s: Sample, into out: inout String) {
        out += "["
        let sign = s.t < 0 ? "-" : ""
        let a = s.t.magnitude
        out += sign + String(a / 1000)
        let frac = a % 1000
        if frac != 0 {
            var f = String(frac)
            while f.count < 3 { f = "0" + f }
            while f.hasSuffix("0") { f.removeLast() }
            out += "." + f
        }
        out += ",\""
        out += formatValue(s.v)
        out += "\"]"
    }

    /// As Go's strconv.FormatFloat(v, 'f', -1, 64) for usual magnitudes, `NaN`, `+Inf`, `-Inf`.
    public static func formatValue(_ v: Double) -> String {
        if v.isNaN { return "NaN" }
        if v.isInfinite { return v > 0 ? "+Inf" : "-Inf" }
        if v == v.rounded(), abs(v) < 1e15 { return String(Int64(v)) }
        return "\(v)"
    }

    /// `s` as a JSON string: quoted, with `"`, `\\` and control characters escaped.
    public static func string(_ s: String, into out: inout String) {
        out += "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 {
                    let h = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - h.count) + h
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        out += "\""
    }
}

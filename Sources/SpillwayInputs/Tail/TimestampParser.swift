import SpillwayCore

/// `timestamp_format`: how the value of `timestamp_key` becomes the record's time.
public enum TimestampFormat: Sendable, Equatable {
    case unix, unixMs, unixUs, unixNs
    case rfc3339
    /// A strftime-style pattern: %Y %y %m %d %e %j %H %I %p %M %S %f (fraction) %z %Z (UTC, Z, GMT)
    /// %b %B %a %A %T %F %D %s %% and literal characters. A time without a zone is UTC.
    case pattern([PatternPart])

    public enum PatternPart: Sendable, Equatable {
        case literal(UInt8)
        case directive(UInt8)
    }

    static let directives: Set<UInt8> = Set("YymdejHIpMSfzZbBaATFDs%".utf8)

    /// Parses the option; nil for an unknown name or a pattern with an unknown directive (`problem`
    /// says which).
    public static func parse(_ text: String) -> (format: TimestampFormat?, problem: String?) {
        switch text {
        case "unix": return (.unix, nil)
        case "unix_ms": return (.unixMs, nil)
        case "unix_us": return (.unixUs, nil)
        case "unix_ns": return (.unixNs, nil)
        case "rfc3339": return (.rfc3339, nil)
        default: break
        }
        guard text.contains("%") else {
            return (nil, "unknown timestamp_format \"\(text)\"")
        }
        var parts: [PatternPart] = []
        var bytes = Array(text.utf8)[...]
        while let b = bytes.popFirst() {
            if b == UInt8(ascii: "%") {
                guard let d = bytes.popFirst(), directives.contains(d) else {
                    return (nil, "timestamp_format \"\(text)\" has an unknown directive")
                }
                // Composites are expanded once here.
                switch d {
                case UInt8(ascii: "T"): parts += expand("%H:%M:%S")
                case UInt8(ascii: "F"): parts += expand("%Y-%m-%d")
                case UInt8(ascii: "D"): parts += expand("%m/%d/%y")
                case UInt8(ascii: "%"): parts.append(.literal(d))
                default: parts.append(.directive(d))
                }
            } else {
                parts.append(.literal(b))
            }
        }
        return (.pattern(parts), nil)
    }

    static func expand(_ s: String) -> [PatternPart] {
        if case .pattern(let p)? = parse(s).format { return p }
        return []
    }

    /// The time in nanoseconds since the epoch, or nil when `value` does not match.
    public func nanoseconds(_ value: FieldValue) -> Int64? {
        switch self {
        case .unix, .unixMs, .unixUs, .unixNs:
            let scale: Double = switch self {
            case .unix: 1e9
            case .unixMs: 1e6
            case .unixUs: 1e3
            default: 1
            }
            switch value {
            case .int(let i):
                let (r, o) = i.multipliedReportingOverflow(by: Int64(scale))
                return o ? nil : r
            case .uint(let u):
                guard u <= UInt64(Int64.max) else { return nil }
                let (r, o) = Int64(u).multipliedReportingOverflow(by: Int64(scale))
                return o ? nil : r
            case .double(let d):
                let ns = d * scale
                guard ns.isFinite, abs(ns) < 9.2e18 else { return nil }
                return Int64(ns.rounded())
            case .string(let s):
                if let i = Int64(s) { return nanoseconds(.int(i)) }
                if let d = Double(s), d.isFinite { return nanoseconds(.double(d)) }
                return nil
            case .bool: return nil
            }
        case .rfc3339:
            guard case .string(let s) = value else { return nil }
            return Self.parseRFC3339(Array(s.utf8))
        case .pattern(let parts):
            let text: String
            switch value {
            case .string(let s): text = s
            case .int, .uint, .double: text = value.text
            case .bool: return nil
            }
            return Self.parsePattern(parts, Array(text.utf8))
        }
    }

    /// `2026-11-22T01:02:03Z`, `2026-11-22T01:02:03.123456789+01:00`; `t` or a space for `T`.
    static func parseRFC3339(_ b: [UInt8]) -> Int64? {
        var p = Cursor(bytes: b)
        guard let y = p.digits(4), p.take("-"), let mo = p.digits(2), p.take("-"), let d = p.digits(2) else { return nil }
        guard let sep = p.next(), sep == UInt8(ascii: "T") || sep == UInt8(ascii: "t") || sep == UInt8(ascii: " ") else { return nil }
        guard let h = p.digits(2), p.take(":"), let mi = p.digits(2), p.take(":"), let s = p.digits(2) else { return nil }
        var frac: Int64 = 0
        if p.take(".") { guard let f = p.fraction() else { return nil }; frac = f }
        guard let offset = p.zone(), p.atEnd else { return nil }
        return Self.compose(year: y, month: mo, day: d, hour: h, minute: mi, second: s, fraction: frac, offsetSeconds: offset)
    }

    static let months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    static let monthNames = ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december"]
    static let days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    static let dayNames = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]

    static func parsePattern(_ parts: [PatternPart], _ b: [UInt8]) -> Int64? {
        var p = Cursor(bytes: b)
        var year = 1970, month = 1, day = 1, hour = 0, minute = 0, second = 0
        var frac: Int64 = 0, offset = 0, dayOfYear: Int?
        var pm: Bool?
        var epoch: Int64?
        for part in parts {
            switch part {
            case .literal(let c):
                guard p.next() == c else { return nil }
            case .directive(let d):
                switch d {
                case UInt8(ascii: "Y"): guard let v = p.digits(4) else { return nil }; year = v
                case UInt8(ascii: "y"): guard let v = p.digits(2) else { return nil }; year = v < 69 ? 2000 + v : 1900 + v
                case UInt8(ascii: "m"): guard let v = p.upTo(2) else { return nil }; month = v
                case UInt8(ascii: "d"): guard let v = p.upTo(2) else { return nil }; day = v
                case UInt8(ascii: "e"): p.skipSpaces(); guard let v = p.upTo(2) else { return nil }; day = v
                case UInt8(ascii: "j"): guard let v = p.upTo(3) else { return nil }; dayOfYear = v
                case UInt8(ascii: "H"): guard let v = p.upTo(2) else { return nil }; hour = v
                case UInt8(ascii: "I"): guard let v = p.upTo(2), (1...12).contains(v) else { return nil }; hour = v
                case UInt8(ascii: "p"):
                    guard let w = p.word()?.lowercased(), w == "am" || w == "pm" else { return nil }
                    pm = w == "pm"
                case UInt8(ascii: "M"): guard let v = p.upTo(2) else { return nil }; minute = v
                case UInt8(ascii: "S"): guard let v = p.upTo(2) else { return nil }; second = v
                case UInt8(ascii: "f"): guard let v = p.fraction() else { return nil }; frac = v
                case UInt8(ascii: "z"), UInt8(ascii: "Z"):
                    if let w = p.peekWord()?.lowercased(), w == "utc" || w == "gmt" { _ = p.word(); offset = 0 } else {
                        guard let o = p.zone() else { return nil }
                        offset = o
                    }
                case UInt8(ascii: "b"), UInt8(ascii: "B"):
                    guard let w = p.word()?.lowercased() else { return nil }
                    guard let i = months.firstIndex(of: w) ?? monthNames.firstIndex(of: w) else { return nil }
                    month = i + 1
                case UInt8(ascii: "a"), UInt8(ascii: "A"):
                    guard let w = p.word()?.lowercased(), days.contains(w) || dayNames.contains(w) else { return nil }
                case UInt8(ascii: "s"):
                    var neg = false
                    if p.peek() == UInt8(ascii: "-") { _ = p.next(); neg = true }
                    guard let v = p.upTo(19) else { return nil }
                    epoch = Int64(neg ? -v : v)
                default: return nil
                }
            }
        }
        guard p.atEnd else { return nil }
        if let pm {
            if hour == 12 { hour = pm ? 12 : 0 } else if pm { hour += 12 }
        }
        if let epoch {
            let (r, o) = epoch.multipliedReportingOverflow(by: 1_000_000_000)
            return o ? nil : r + frac
        }
        if let dayOfYear {
            guard (1...366).contains(dayOfYear) else { return nil }
            let base = daysFromCivil(year, 1, 1) + Int64(dayOfYear - 1)
            guard hour < 24, minute < 60, second <= 60 else { return nil }
            return (base * 86400 + Int64(hour * 3600 + minute * 60 + second - offset)) * 1_000_000_000 + frac
        }
        return compose(year: year, month: month, day: day, hour: hour, minute: minute, second: second, fraction: frac, offsetSeconds: offset)
    }

    static func compose(year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int, fraction: Int64, offsetSeconds: Int) -> Int64? {
        guard (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second <= 60 else { return nil }
        let days = daysFromCivil(year, month, day)
        let seconds = days * 86400 + Int64(hour * 3600 + minute * 60 + second - offsetSeconds)
        let (ns, o) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        return o ? nil : ns + fraction
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    static func daysFromCivil(_ y0: Int, _ m: Int, _ d: Int) -> Int64 {
        let y = Int64(m <= 2 ? y0 - 1 : y0)
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = Int64((m + 9) % 12)
        let doy = (153 * mp + 2) / 5 + Int64(d) - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146097 + doe - 719468
    }

    struct Cursor {
        let bytes: [UInt8]
        var i = 0
        var atEnd: Bool { i == bytes.count }
        func peek() -> UInt8? { i < bytes.count ? bytes[i] : nil }
        mutating func next() -> UInt8? {
            guard i < bytes.count else { return nil }
            i += 1
            return bytes[i - 1]
        }
        mutating func take(_ c: Character) -> Bool {
            guard let a = c.asciiValue, peek() == a else { return false }
            i += 1
            return true
        }
        mutating func skipSpaces() { while peek() == UInt8(ascii: " ") { i += 1 } }
        /// Exactly `n` digits.
        mutating func digits(_ n: Int) -> Int? {
            guard i + n <= bytes.count else { return nil }
            var v = 0
            for k in 0..<n {
                let c = bytes[i + k]
                guard c >= 48, c <= 57 else { return nil }
                v = v * 10 + Int(c - 48)
            }
            i += n
            return v
        }
        /// One to `n` digits.
        mutating func upTo(_ n: Int) -> Int? {
            var v = 0, k = 0
            while k < n, let c = peek(), c >= 48, c <= 57 {
                v = v * 10 + Int(c - 48)
                i += 1
                k += 1
            }
            return k > 0 ? v : nil
        }
        /// Digits of a fraction of a second, as nanoseconds (beyond 9 digits ignored).
        mutating func fraction() -> Int64? {
            var v: Int64 = 0, k = 0
            while let c = peek(), c >= 48, c <= 57 {
                if k < 9 { v = v * 10 + Int64(c - 48) }
                i += 1
                k += 1
            }
            guard k > 0 else { return nil }
            for _ in k..<max(k, 9) { v *= 10 }
            return v
        }
        /// `Z`, `+hh:mm`, `-hhmm`, `+hh`: seconds east of UTC.
        mutating func zone() -> Int? {
            guard let c = next() else { return nil }
            if c == UInt8(ascii: "Z") || c == UInt8(ascii: "z") { return 0 }
            guard c == UInt8(ascii: "+") || c == UInt8(ascii: "-") else { return nil }
            guard let h = digits(2) else { return nil }
            _ = take(":")
            let m = digits(2) ?? 0
            guard h < 24, m < 60 else { return nil }
            return (c == UInt8(ascii: "-") ? -1 : 1) * (h * 3600 + m * 60)
        }
        func peekWord() -> String? {
            var j = i
            while j < bytes.count, (bytes[j] | 0x20) >= 97, (bytes[j] | 0x20) <= 122 { j += 1 }
            return j > i ? String(decoding: bytes[i..<j], as: UTF8.self) : nil
        }
        mutating func word() -> String? {
            guard let w = peekWord() else { return nil }
            i += w.utf8.count
            return w
        }
    }
}

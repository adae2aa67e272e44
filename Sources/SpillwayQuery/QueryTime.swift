import SpillwayCore

/// Times as the query commands take and print them, in milliseconds since the epoch (the unit of
/// stream entry IDs and RedisTimeSeries timestamps).
public enum QueryTime {
    /// Reads a time: `now`; a duration before now, `-1h` or `now-1h` (`now+5m` or `+5m` after it); an RFC 3339
    /// time, `2025-06-01T12:00:00Z`, `2025-06-01T14:00:00.250+02:00` (a space instead of `T` too);
    /// or epoch seconds, `1748779200` or `1748779200.25` (13 digits or more: milliseconds,
    /// `1748779200250`). Nil when it is none of those.
    public static func parse(_ text: String, now: Int64) -> Int64? {
        let t = text
        if t == "now" { return now }
        if t.hasPrefix("now-") || t.hasPrefix("now+") || t.hasPrefix("-") || t.hasPrefix("+") {
            let sign: Int64 = t.hasPrefix("now+") || t.hasPrefix("+") ? 1 : -1
            let rest = t.hasPrefix("now") ? t.dropFirst(4) : t.dropFirst()
            guard let d = durationMs(String(rest)) else { return nil }
            let (r, overflow) = now.addingReportingOverflow(sign * d)
            return overflow ? nil : r
        }
        if let epoch = parseEpoch(t) { return epoch }
        return parseRFC3339(t)
    }

    /// A duration in milliseconds (`Units.parseDuration`'s syntax: `500ms`, `1m`, `1h30m`, `7d`; a
    /// plain number is seconds, `10` or `1.5`, as Prometheus takes a step), or nil.
    public static func durationMs(_ text: String) -> Int64? {
        if decimal(text) != nil, let seconds = Double(text), seconds < 1e12 {
            return Int64((seconds * 1000).rounded())
        }
        guard let ns = Units.parseDuration(text) else { return nil }
        return ns / 1_000_000
    }

    /// `digits` or `digits.digits` (ASCII), split at the point; nil for anything else.
    static func decimal(_ t: String) -> (whole: Substring, fraction: Substring?)? {
        let parts = t.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count <= 2, parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0.isASCII && $0.isNumber } }) else { return nil }
        return (parts[0], parts.count == 2 ? parts[1] : nil)
    }

    static func parseEpoch(_ t: String) -> Int64? {
        guard let (whole, fraction) = decimal(t) else { return nil }
        if whole.count >= 13 {
            guard fraction == nil, let ms = Int64(whole) else { return nil }
            return ms
        }
        guard let seconds = Int64(whole) else { return nil }
        var ms = seconds * 1000
        if let fraction {
            let frac = (fraction + "000").prefix(3)
            ms += Int64(frac) ?? 0
        }
        return ms
    }

    /// `YYYY-MM-DD(T| )hh:mm:ss[.fraction](Z|±hh:mm)`.
    static func parseRFC3339(_ t: String) -> Int64? {
        let b = Array(t.utf8)
        var i = 0
        func number(_ digits: Int) -> Int? {
            guard i + digits <= b.count else { return nil }
            var n = 0
            for k in i..<(i + digits) {
                guard b[k] >= 0x30, b[k] <= 0x39 else { return nil }
                n = n * 10 + Int(b[k] - 0x30)
            }
            i += digits
            return n
        }
        func expect(_ c: Character...) -> Bool {
            guard i < b.count, c.contains(Character(UnicodeScalar(b[i]))) else { return false }
            i += 1
            return true
        }
        guard let year = number(4), expect("-"), let month = number(2), expect("-"), let day = number(2),
              expect("T", "t", " "), let hour = number(2), expect(":"), let minute = number(2), expect(":"),
              let second = number(2) else { return nil }
        guard (1...12).contains(month), day >= 1, day <= daysIn(month: month, year: year), hour < 24, minute < 60, second < 61 else { return nil }
        var ms = 0
        if i < b.count, b[i] == UInt8(ascii: ".") {
            i += 1
            let start = i
            while i < b.count, b[i] >= 0x30, b[i] <= 0x39 { i += 1 }
            guard i > start else { return nil }
            let digits = Array(b[start..<min(i, start + 3)]) + Array(repeating: UInt8(ascii: "0"), count: max(0, 3 - (i - start)))
            ms = digits.reduce(0) { $0 * 10 + Int($1 - 0x30) }
        }
        var offset = 0
        if expect("Z", "z") {
            offset = 0
        } else if i < b.count, b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-") {
            let sign = b[i] == UInt8(ascii: "-") ? -1 : 1
            i += 1
            guard let oh = number(2), expect(":"), let om = number(2), oh < 24, om < 60 else { return nil }
            offset = sign * (oh * 60 + om) * 60
        } else {
            return nil
        }
        guard i == b.count else { return nil }
        let days = daysFromCivil(year: year, month: month, day: day)
        let seconds = Int64(days) * 86400 + Int64(hour * 3600 + minute * 60 + second) - Int64(offset)
        return seconds * 1000 + Int64(ms)
    }

    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    /// Days since 1970-01-01 (Howard Hinnant's days_from_civil).
    static func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    /// `ms` as RFC 3339 in UTC: `2025-06-01T12:00:00Z`, with `.250` when the milliseconds are not 0.
    public static func format(_ ms: Int64) -> String {
        let seconds = ms >= 0 ? ms / 1000 : (ms - 999) / 1000
        let milli = Int(ms - seconds * 1000)
        var days = Int(seconds >= 0 ? seconds / 86400 : (seconds - 86399) / 86400)
        let secOfDay = Int(seconds - Int64(days) * 86400)
        // civil_from_days
        days += 719_468
        let era = (days >= 0 ? days : days - 146_096) / 146_097
        let doe = days - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
        func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
        var s = "\(year)-\(two(month))-\(two(day))T\(two(secOfDay / 3600)):\(two(secOfDay / 60 % 60)):\(two(secOfDay % 60))"
        if milli != 0 { s += "." + String(String(milli + 1000).dropFirst()) }
        return s + "Z"
    }
}

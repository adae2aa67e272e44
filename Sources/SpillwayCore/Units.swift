/// Durations and sizes as users write them in agent.toml.
public enum Units {
    /// Parses `500ms`, `10s`, `5m`, `1h`, `1d`, `250us`, `100ns`, compounds like `1h30m`, and `0`.
    /// Returns nanoseconds, or nil with no unit, an unknown unit, a negative or overflowing value.
    public static func parseDuration(_ text: String) -> Int64? {
        let s = Array(text.utf8)
        guard !s.isEmpty else { return nil }
        if s == [UInt8(ascii: "0")] { return 0 }
        var total: Int64 = 0
        var i = 0
        while i < s.count {
            let numStart = i
            while i < s.count, (s[i] >= 0x30 && s[i] <= 0x39) || s[i] == UInt8(ascii: ".") { i += 1 }
            guard i > numStart, let number = Double(String(decoding: s[numStart..<i], as: UTF8.self)) else { return nil }
            let unitStart = i
            while i < s.count, (s[i] >= 0x61 && s[i] <= 0x7A) || s[i] == 0xC2 || s[i] == 0xB5 { i += 1 }
            let unit = String(decoding: s[unitStart..<i], as: UTF8.self)
            let scale: Double
            switch unit {
            case "ns": scale = 1
            case "us", "µs": scale = 1e3
            case "ms": scale = 1e6
            case "s": scale = 1e9
            case "m": scale = 60e9
            case "h": scale = 3600e9
            case "d": scale = 86400e9
            default: return nil
            }
            let value = number * scale
            guard value.isFinite, value < 9.2e18 else { return nil }
            total += Int64(value.rounded())
            guard total >= 0, total < 9_200_000_000_000_000_000 else { return nil }
        }
        return total
    }

    /// Parses `1024`, `64KiB`, `1GiB`, `8MiB`, `10MB`, `1.5GB`, `512B` (case of the unit as written;
    /// `k`/`K` both accepted). Returns bytes, or nil for anything else.
    public static func parseSize(_ text: String) -> Int64? {
        let s = Array(text.utf8)
        var i = 0
        while i < s.count, (s[i] >= 0x30 && s[i] <= 0x39) || s[i] == UInt8(ascii: ".") { i += 1 }
        guard i > 0, let number = Double(String(decoding: s[0..<i], as: UTF8.self)) else { return nil }
        while i < s.count, s[i] == UInt8(ascii: " ") { i += 1 }
        let unit = String(decoding: s[i...], as: UTF8.self)
        let scale: Double
        switch unit {
        case "", "B", "b": scale = 1
        case "KiB", "kiB", "Ki": scale = 1024
        case "MiB", "Mi": scale = 1024 * 1024
        case "GiB", "Gi": scale = 1024 * 1024 * 1024
        case "TiB", "Ti": scale = 1024 * 1024 * 1024 * 1024
        case "KB", "kB", "k", "K": scale = 1e3
        case "MB", "M": scale = 1e6
        case "GB", "G": scale = 1e9
        case "TB", "T": scale = 1e12
        default: return nil
        }
        let value = number * scale
        guard value.isFinite, value < 9.2e18, value == value.rounded(.down) || scale > 1 else { return nil }
        return Int64(value.rounded(.down))
    }

    /// A size as the configuration writes it: `1GiB`, `64KiB`, or bytes (`1000B`).
    public static func formatSize(_ bytes: Int64) -> String {
        for (unit, scale) in [("TiB", Int64(1) << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] where bytes >= scale && bytes % scale == 0 {
            return "\(bytes / scale)\(unit)"
        }
        return "\(bytes)B"
    }

    /// Human form of a duration in nanoseconds, for messages and `check` output (`10s`, `1m30s`, `500ms`).
    public static func formatDuration(_ ns: Int64) -> String {
        if ns == 0 { return "0s" }
        if ns % 1_000_000_000 != 0 {
            if ns % 1_000_000 == 0 { return "\(ns / 1_000_000)ms" }
            if ns % 1000 == 0 { return "\(ns / 1000)us" }
            return "\(ns)ns"
        }
        var s = ns / 1_000_000_000
        var out = ""
        if s >= 3600 { out += "\(s / 3600)h"; s %= 3600 }
        if s >= 60 { out += "\(s / 60)m"; s %= 60 }
        if s > 0 { out += "\(s)s" }
        return out
    }
}

/// The closest candidate to a misspelt word (Levenshtein distance at most a third of its length,
/// and at least 2 allowed), for "did you mean" hints.
public func closestMatch(to word: String, in candidates: [String]) -> String? {
    let w = Array(word.lowercased().utf8)
    var best: (String, Int)?
    for candidate in candidates {
        let c = Array(candidate.lowercased().utf8)
        let d = editDistance(w, c)
        if best == nil || d < best!.1 { best = (candidate, d) }
    }
    guard let (match, distance) = best else { return nil }
    let allowed = max(2, w.count / 3)
    return distance <= allowed ? match : nil
}

private func editDistance(_ a: [UInt8], _ b: [UInt8]) -> Int {
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    // Optimal string alignment distance: insert, delete, substitute, swap two neighbours.
    var older = [Int](repeating: 0, count: b.count + 1)
    var prev = Array(0...b.count)
    var cur = [Int](repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        cur[0] = i
        for j in 1...b.count {
            let cost = a[i - 1] == b[j - 1] ? 0 : 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                cur[j] = min(cur[j], older[j - 2] + 1)
            }
        }
        (older, prev, cur) = (prev, cur, older)
    }
    return prev[b.count]
}

/// /proc/loadavg: `0.52 0.58 0.59 1/467 12345`.
public struct LoadAvg: Sendable, Equatable {
    public var load1: Double
    public var load5: Double
    public var load15: Double

    /// Parses the file's one line; anything else than three load averages first is an error.
    public static func parse(_ bytes: [UInt8], path: String = "loadavg") throws(ProcFSError) -> LoadAvg {
        guard bytes.last == 0x0A else {
            throw ProcFSError(path: path, line: 1, kind: "cut off", reason: "the line has no newline (the read was cut short)")
        }
        var s = ByteScanner(bytes)
        var v: [Double] = []
        for _ in 0..<3 {
            guard let t = s.token(), let d = parseDecimal(t) else {
                throw ProcFSError(path: path, line: 1, kind: "malformed", reason: "expected three load averages")
            }
            v.append(d)
        }
        return LoadAvg(load1: v[0], load5: v[1], load15: v[2])
    }
}

/// /proc/uptime: `350735.47 234388.90` (seconds up, seconds idle summed over CPUs).
public enum Uptime {
    public static func parse(_ bytes: [UInt8], path: String = "uptime") throws(ProcFSError) -> Double {
        guard bytes.last == 0x0A else {
            throw ProcFSError(path: path, line: 1, kind: "cut off", reason: "the line has no newline (the read was cut short)")
        }
        var s = ByteScanner(bytes)
        guard let t = s.token(), let d = parseDecimal(t) else {
            throw ProcFSError(path: path, line: 1, kind: "malformed", reason: "expected the seconds since boot")
        }
        return d
    }
}

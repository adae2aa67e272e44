/// One line of /proc/diskstats: the first 14 columns, which every kernel since 2.6 writes.
public struct DiskStat: Sendable, Equatable {
    public var major: UInt64
    public var minor: UInt64
    public var name: String
    public var reads: UInt64
    public var mergedReads: UInt64
    public var sectorsRead: UInt64
    public var readTimeMs: UInt64
    public var writes: UInt64
    public var mergedWrites: UInt64
    public var sectorsWritten: UInt64
    public var writeTimeMs: UInt64
    public var inProgress: UInt64
    public var ioTimeMs: UInt64
    public var weightedIOTimeMs: UInt64
}

public enum DiskStats {
    /// The device names of every line, readable or not (the third column), for telling partitions
    /// by their names: a disk whose own line was left out still names its partitions.
    public static func names(_ bytes: [UInt8]) -> [String] {
        var s = ByteScanner(bytes)
        var out: [String] = []
        while !s.atEnd {
            defer { s.nextLine() }
            if s.token() != nil, s.token() != nil, let name = s.token() { out.append(string(name)) }
        }
        return out
    }

    /// Parses /proc/diskstats. Lines with discard/flush columns (kernels 4.18+, 5.5+) parse the same.
    /// A line that cannot be read is left out and added to `skipped`; the other devices are kept.
    public static func parse(_ bytes: [UInt8], path: String = "diskstats",
                             skipped: inout SkippedLines) -> [DiskStat] {
        var s = ByteScanner(bytes)
        var out: [DiskStat] = []
        var v = [UInt64](repeating: 0, count: 11)
        lines: while !s.atEnd {
            defer { s.nextLine() }
            if s.atEndOfLine { continue }
            let line = s.line
            if s.onCutLine {
                skipped.cut(path, line: line)
                break
            }
            guard let major = s.uint64(), let minor = s.uint64(), let name = s.token() else {
                skipped.append(ProcFSError(path: path, line: line, kind: "no device", reason: "expected \"major minor name\""))
                continue
            }
            for i in 0..<11 {
                guard let t = s.token() else {
                    skipped.append(ProcFSError(path: path, line: line, kind: "too few columns",
                                               reason: "\(string(name)): \(i) counters, need 11"))
                    continue lines
                }
                guard let n = parseUInt64(t) else {
                    skipped.append(ProcFSError(path: path, line: line, kind: "not a counter",
                                               reason: "\(string(name)): \"\(string(t))\" is not a counter"))
                    continue lines
                }
                v[i] = n
            }
            out.append(DiskStat(
                major: major, minor: minor, name: string(name),
                reads: v[0], mergedReads: v[1], sectorsRead: v[2], readTimeMs: v[3],
                writes: v[4], mergedWrites: v[5], sectorsWritten: v[6], writeTimeMs: v[7],
                inProgress: v[8], ioTimeMs: v[9], weightedIOTimeMs: v[10]
            ))
        }
        return out
    }
}

/// One interface of /proc/net/dev.
public struct NetDevStat: Sendable, Equatable {
    public var name: String
    public var rxBytes: UInt64
    public var rxPackets: UInt64
    public var rxErrors: UInt64
    public var rxDropped: UInt64
    public var txBytes: UInt64
    public var txPackets: UInt64
    public var txErrors: UInt64
    public var txDropped: UInt64
}

public enum NetDev {
    /// Parses /proc/net/dev: two header lines, then `name: 8 receive counters 8 transmit counters`.
    /// The counters never hold a `:`, so the name is everything before the last one: old kernels
    /// write alias lines (`ibr10:30:  0 0 …`, name `ibr10:30`) and no space after the colon
    /// (`eth0:123…`). A line that cannot be read is left out and added to `skipped`.
    public static func parse(_ bytes: [UInt8], path: String = "net/dev", skipped: inout SkippedLines) -> [NetDevStat] {
        var s = ByteScanner(bytes)
        var out: [NetDevStat] = []
        var v = [UInt64](repeating: 0, count: 16)
        lines: while !s.atEnd {
            defer { s.nextLine() }
            let line = s.line
            s.skipBlanks()
            let rest = s.restOfLine()
            guard !rest.isEmpty else { continue }
            if line <= 2, rest.contains(UInt8(ascii: "|")) { continue }  // the two header lines
            if s.onCutLine {
                skipped.cut(path, line: line)
                break
            }
            guard let colon = rest.lastIndex(of: UInt8(ascii: ":")) else {
                if line <= 2 { continue }
                skipped.append(ProcFSError(path: path, line: line, kind: "no name", reason: "no \"name:\" at the start of the line"))
                continue
            }
            let name = rest[rest.startIndex..<colon]
            guard !name.isEmpty, !name.contains(0x20), !name.contains(0x09) else {
                skipped.append(ProcFSError(path: path, line: line, kind: "no name",
                                           reason: name.isEmpty ? "empty interface name" : "\"\(string(name))\" is not an interface name"))
                continue
            }
            var counters = ByteScanner(Array(rest[(colon + 1)...]))
            for i in 0..<16 {
                guard let t = counters.token() else {
                    skipped.append(ProcFSError(path: path, line: line, kind: "too few columns",
                                               reason: "\(string(name)): \(i) counters, need 16"))
                    continue lines
                }
                guard let n = parseUInt64(t) else {
                    skipped.append(ProcFSError(path: path, line: line, kind: "not a counter",
                                               reason: "\(string(name)): \"\(string(t))\" is not a counter"))
                    continue lines
                }
                v[i] = n
            }
            out.append(NetDevStat(
                name: string(name),
                rxBytes: v[0], rxPackets: v[1], rxErrors: v[2], rxDropped: v[3],
                txBytes: v[8], txPackets: v[9], txErrors: v[10], txDropped: v[11]
            ))
        }
        return out
    }
}

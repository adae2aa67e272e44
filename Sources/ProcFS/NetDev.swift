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
    /// Interface names cannot hold `:` or white space (the kernel refuses them), so the name is
    /// everything before the first `:`; old kernels write no space after it (`eth0:123…`).
    public static func parse(_ bytes: [UInt8], path: String = "net/dev") throws(ProcFSError) -> [NetDevStat] {
        var s = ByteScanner(bytes)
        var out: [NetDevStat] = []
        while !s.atEnd {
            defer { s.nextLine() }
            let line = s.line
            s.skipBlanks()
            let rest = s.restOfLine()
            guard !rest.isEmpty else { continue }
            guard let colon = rest.firstIndex(of: UInt8(ascii: ":")) else {
                if line <= 2 { continue }  // the two header lines
                throw ProcFSError(path: path, line: line, reason: "no \"name:\" at the start of the line")
            }
            if line <= 2, rest.contains(UInt8(ascii: "|")) { continue }
            let name = rest[rest.startIndex..<colon]
            guard !name.isEmpty else {
                throw ProcFSError(path: path, line: line, reason: "empty interface name")
            }
            var counters = ByteScanner(Array(rest[(colon + 1)...]))
            var v = [UInt64](repeating: 0, count: 16)
            for i in 0..<16 {
                guard let t = counters.token() else {
                    throw ProcFSError(path: path, line: line, reason: "\(string(name)): \(i) counters, need 16")
                }
                guard let n = parseUInt64(t) else {
                    throw ProcFSError(path: path, line: line, reason: "\(string(name)): \"\(string(t))\" is not a counter")
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

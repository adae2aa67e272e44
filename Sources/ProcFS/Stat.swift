/// One `cpu…` line of /proc/stat, in USER_HZ ticks. Columns a kernel does not have (older kernels
/// stop after `iowait`, `irq`, `softirq`, `steal` or `guest`) are 0.
public struct CPUTimes: Sendable, Equatable {
    /// `cpu` for the total line, `cpu0`, `cpu1`, … for the cores.
    public var name: String
    public var user: UInt64 = 0
    public var nice: UInt64 = 0
    public var system: UInt64 = 0
    public var idle: UInt64 = 0
    public var iowait: UInt64 = 0
    public var irq: UInt64 = 0
    public var softirq: UInt64 = 0
    public var steal: UInt64 = 0
    public var guest: UInt64 = 0
    public var guestNice: UInt64 = 0

    public init(name: String) { self.name = name }
}

/// What Spillway reads from /proc/stat.
public struct Stat: Sendable, Equatable {
    /// The total line first (when present), then the cores in file order.
    public var cpus: [CPUTimes] = []
    public var procsRunning: UInt64?
    public var procsBlocked: UInt64?
    /// `btime`: when the machine booted, seconds since the epoch.
    public var bootTime: UInt64?
    /// `cpu…` lines left out (unreadable): the cores counted here are then not all of them.
    public var droppedCPULines = 0

    public init() {}

    /// The `cpu` total line, if the file had one.
    public var total: CPUTimes? { cpus.first { $0.name == "cpu" } }
    /// The per-core lines.
    public var cores: [CPUTimes] { cpus.filter { $0.name != "cpu" } }

    /// Parses /proc/stat. A `cpu` line needs at least user, nice, system and idle; other lines are
    /// ignored unless they are `procs_running`, `procs_blocked` or `btime`, which must then be
    /// numbers. A line that cannot be read is left out and added to `skipped`; a file with no
    /// readable `cpu` line at all is an error.
    public static func parse(_ bytes: [UInt8], path: String = "stat", skipped: inout SkippedLines) throws(ProcFSError) -> Stat {
        var s = ByteScanner(bytes)
        var stat = Stat()
        lines: while !s.atEnd {
            defer { s.nextLine() }
            guard let key = s.token() else { continue }
            let used = startsWith(key, "cpu") || equals(key, "procs_running") || equals(key, "procs_blocked") || equals(key, "btime")
            if used, s.onCutLine {
                skipped.cut(path, line: s.line)
                if startsWith(key, "cpu") { stat.droppedCPULines += 1 }
                break
            }
            if startsWith(key, "cpu") {
                let suffix = key.dropFirst(3)
                guard suffix.isEmpty || parseUInt64(suffix) != nil else {
                    skipped.append(ProcFSError(path: path, line: s.line, kind: "bad cpu name", reason: "unexpected cpu line name \"\(string(key))\""))
                    stat.droppedCPULines += 1
                    continue
                }
                var times = CPUTimes(name: string(key))
                var count = 0
                while let t = s.token() {
                    guard let v = parseUInt64(t) else {
                        skipped.append(ProcFSError(path: path, line: s.line, kind: "not a counter",
                                                   reason: "\(string(key)): \"\(string(t))\" is not a counter"))
                        stat.droppedCPULines += 1
                        continue lines
                    }
                    switch count {
                    case 0: times.user = v
                    case 1: times.nice = v
                    case 2: times.system = v
                    case 3: times.idle = v
                    case 4: times.iowait = v
                    case 5: times.irq = v
                    case 6: times.softirq = v
                    case 7: times.steal = v
                    case 8: times.guest = v
                    case 9: times.guestNice = v
                    default: break  // columns a future kernel may add
                    }
                    count += 1
                }
                guard count >= 4 else {
                    skipped.append(ProcFSError(path: path, line: s.line, kind: "too few columns",
                                               reason: "\(string(key)): \(count) columns, need at least 4"))
                    stat.droppedCPULines += 1
                    continue
                }
                stat.cpus.append(times)
            } else if equals(key, "procs_running") || equals(key, "procs_blocked") || equals(key, "btime") {
                guard let v = s.uint64() else {
                    skipped.append(ProcFSError(path: path, line: s.line, kind: "no value", reason: "\(string(key)) has no numeric value"))
                    continue
                }
                if equals(key, "procs_running") {
                    stat.procsRunning = v
                } else if equals(key, "procs_blocked") {
                    stat.procsBlocked = v
                } else {
                    stat.bootTime = v
                }
            }
        }
        guard !stat.cpus.isEmpty else {
            throw ProcFSError(path: path, kind: "no cpu lines", reason: "no readable cpu line (is this /proc/stat?)")
        }
        return stat
    }
}

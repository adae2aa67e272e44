/// What Spillway reads from /proc/meminfo, in bytes (the file's kB are 1024 bytes). A key the kernel
/// does not have (MemAvailable before 3.14, SReclaimable before 2.6.19) is nil.
public struct MemInfo: Sendable, Equatable {
    public var memTotal: UInt64?
    public var memFree: UInt64?
    public var memAvailable: UInt64?
    public var buffers: UInt64?
    public var cached: UInt64?
    public var sReclaimable: UInt64?
    public var slab: UInt64?
    public var dirty: UInt64?
    public var swapTotal: UInt64?
    public var swapFree: UInt64?
    /// Known keys whose line was there but could not be read (nil above, and not because the kernel
    /// lacks them): nothing is derived from them.
    public var unreadable: Set<String> = []

    public init() {}

    /// Parses /proc/meminfo: lines `Key:   value [kB]`. Unknown keys are skipped without allocating.
    /// A known key with a non-numeric value or an unknown unit is left out (nil) and added to
    /// `skipped`; a file without a usable MemTotal is an error.
    public static func parse(_ bytes: [UInt8], path: String = "meminfo",
                             skipped: inout SkippedLines) throws(ProcFSError) -> MemInfo {
        var s = ByteScanner(bytes)
        var m = MemInfo()
        while !s.atEnd {
            defer { s.nextLine() }
            guard let keyToken = s.token(), keyToken.last == UInt8(ascii: ":") else { continue }
            let key = keyToken.dropLast()
            let slot: WritableKeyPath<MemInfo, UInt64?>
            switch key.count {
            case 6 where equals(key, "Cached"): slot = \.cached
            case 4 where equals(key, "Slab"): slot = \.slab
            case 5 where equals(key, "Dirty"): slot = \.dirty
            case 7 where equals(key, "Buffers"): slot = \.buffers
            case 7 where equals(key, "MemFree"): slot = \.memFree
            case 8 where equals(key, "MemTotal"): slot = \.memTotal
            case 8 where equals(key, "SwapFree"): slot = \.swapFree
            case 9 where equals(key, "SwapTotal"): slot = \.swapTotal
            case 12 where equals(key, "MemAvailable"): slot = \.memAvailable
            case 12 where equals(key, "SReclaimable"): slot = \.sReclaimable
            default: continue
            }
            if s.onCutLine {
                skipped.cut(path, line: s.line)
                m.unreadable.insert(string(key))
                break
            }
            guard let value = s.uint64() else {
                skipped.append(ProcFSError(path: path, line: s.line, kind: "no value", reason: "\(string(key)) has no numeric value"))
                m.unreadable.insert(string(key))
                continue
            }
            var multiplier: UInt64 = 1
            if let unit = s.token() {
                guard equals(unit, "kB") else {
                    skipped.append(ProcFSError(path: path, line: s.line, kind: "unknown unit",
                                               reason: "\(string(key)): unknown unit \"\(string(unit))\""))
                    m.unreadable.insert(string(key))
                    continue
                }
                multiplier = 1024
            }
            let (bytesValue, overflow) = value.multipliedReportingOverflow(by: multiplier)
            guard !overflow else {
                skipped.append(ProcFSError(path: path, line: s.line, kind: "overflow", reason: "\(string(key)) overflows"))
                m.unreadable.insert(string(key))
                continue
            }
            m[keyPath: slot] = bytesValue
        }
        guard m.memTotal != nil else {
            throw ProcFSError(path: path, kind: "no MemTotal", reason: "no usable MemTotal line (is this /proc/meminfo?)")
        }
        return m
    }
}

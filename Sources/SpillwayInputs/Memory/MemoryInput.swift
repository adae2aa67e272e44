import ProcFS
import SpillwayConfig
import SpillwayCore

/// `mem`: memory and swap, in bytes, from /proc/meminfo.
public struct MemoryInput: Input {
    public init() {}

    public static let descriptor = InputDescriptor(name: "mem", summary: "memory and swap in bytes (/proc/meminfo)") { _ in
        MemoryInput()
    }

    public mutating func gather(into records: inout [Record], context: InputContext) throws {
        let proc = ProcFS(root: context.procRoot)
        let m = try MemInfo.parse(proc.read("meminfo"), path: proc.path("meminfo"))
        records.append(Record(name: "mem", fields: Self.fields(m), timestamp: context.now))
    }

    /// `cached` includes reclaimable slab (as `free` and Telegraf count it); `used` is what is left of
    /// `total` after free, buffers and cache. Kernels before 3.14 have no MemAvailable: there
    /// `available` is free + buffers + cached.
    static func fields(_ m: MemInfo) -> [Field] {
        let total = m.memTotal ?? 0
        let free = m.memFree ?? 0
        let buffers = m.buffers ?? 0
        let cached = (m.cached ?? 0) &+ (m.sReclaimable ?? 0)
        let available = m.memAvailable ?? (free &+ buffers &+ cached)
        let notUsed = free &+ buffers &+ cached
        let used = total > notUsed ? total - notUsed : 0
        let swapTotal = m.swapTotal ?? 0
        let swapFree = m.swapFree ?? 0
        func pct(_ v: UInt64) -> FieldValue { .double(total == 0 ? 0 : Double(v) * 100 / Double(total)) }
        return [
            Field("total", .uint(total)),
            Field("available", .uint(available)),
            Field("available_percent", pct(available)),
            Field("used", .uint(used)),
            Field("used_percent", pct(used)),
            Field("free", .uint(free)),
            Field("buffered", .uint(buffers)),
            Field("cached", .uint(cached)),
            Field("slab", .uint(m.slab ?? 0)),
            Field("dirty", .uint(m.dirty ?? 0)),
            Field("swap_total", .uint(swapTotal)),
            Field("swap_free", .uint(swapFree)),
            Field("swap_used", .uint(swapTotal > swapFree ? swapTotal - swapFree : 0)),
        ]
    }
}

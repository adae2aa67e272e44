import ProcFS
import SpillwayConfig
import SpillwayCore

/// `mem`: memory and swap, in bytes, from /proc/meminfo.
public struct MemoryInput: Input {
    public init() {}

    public static let descriptor = InputDescriptor(name: "mem", summary: "memory and swap in bytes (/proc/meminfo)") { _ in
        MemoryInput()
    }

    public mutating func gather(into records: inout [Record], report: inout InputReport, context: InputContext) throws {
        let proc = ProcFS(root: context.procRoot)
        let m = try proc.parse("meminfo", report: &report, MemInfo.parse)
        records.append(Record(name: "mem", fields: Self.fields(m), timestamp: context.now))
    }

    /// `cached` includes reclaimable slab (as procps 3.3's `free` counts it); `used` is what is left of
    /// `total` after free, buffers and cache (procps 3.3's `free`; newer `free` and gopsutil, since
    /// 2025, report total - available, which is `total - available` here). Kernels before 3.14 have no MemAvailable: there
    /// `available` is free + buffers + cached; before 2.6.19 there is no SReclaimable (0). A field
    /// whose source line was there but unreadable (`m.unreadable`) is left out, with every field
    /// derived from it, rather than reported as 0.
    static func fields(_ m: MemInfo) -> [Field] {
        let total = m.memTotal ?? 0
        let reclaimable: UInt64? = m.unreadable.contains("SReclaimable") ? nil : (m.sReclaimable ?? 0)
        let cached = m.cached.flatMap { c in reclaimable.map { c &+ $0 } }
        let notUsed = m.memFree.flatMap { f in m.buffers.flatMap { b in cached.map { f &+ b &+ $0 } } }
        let available = m.memAvailable ?? (m.unreadable.contains("MemAvailable") ? nil : notUsed)
        let used = notUsed.map { total > $0 ? total - $0 : 0 }
        func pct(_ v: UInt64) -> FieldValue { .double(total == 0 ? 0 : Double(v) * 100 / Double(total)) }
        var fields = [Field("total", .uint(total))]
        fields.reserveCapacity(13)
        func add(_ name: String, _ v: UInt64?) { if let v { fields.append(Field(name, .uint(v))) } }
        add("available", available)
        if let available { fields.append(Field("available_percent", pct(available))) }
        add("used", used)
        if let used { fields.append(Field("used_percent", pct(used))) }
        add("free", m.memFree)
        add("buffered", m.buffers)
        add("cached", cached)
        add("slab", m.slab)
        add("dirty", m.dirty)
        add("swap_total", m.swapTotal)
        add("swap_free", m.swapFree)
        add("swap_used", m.swapTotal.flatMap { t in m.swapFree.map { t > $0 ? t - $0 : 0 } })
        return fields
    }
}

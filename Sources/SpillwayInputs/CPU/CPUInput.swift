import ProcFS
import SpillwayConfig
import SpillwayCore

/// `cpu`: usage percentages per core and in total, from the change of /proc/stat between two
/// collections. The first collection (and a CPU's first after it comes online) emits nothing.
public struct CPUInput: Input {
    public var perCPU: Bool
    public var totalCPU: Bool
    private var previous: [String: CPUTimes] = [:]

    public init(perCPU: Bool = true, totalCPU: Bool = true) {
        self.perCPU = perCPU
        self.totalCPU = totalCPU
    }

    public static let descriptor = InputDescriptor(name: "cpu", summary: "CPU usage per core and in total (/proc/stat)") { r in
        let input = CPUInput(perCPU: r.bool("percpu", default: true), totalCPU: r.bool("totalcpu", default: true))
        if !input.perCPU && !input.totalCPU {
            r.error("totalcpu", "percpu and totalcpu are both false, so this input would emit nothing",
                    fix: "set one of them to true, or remove the input")
        }
        return input
    }

    public var needsBaseline: Bool { true }

    public mutating func gather(into records: inout [Record], report: inout InputReport, context: InputContext) throws {
        let proc = ProcFS(root: context.procRoot)
        let stat = try proc.parse("stat", report: &report, Stat.parse)
        var seen: [String: CPUTimes] = [:]
        seen.reserveCapacity(stat.cpus.count)
        for cur in stat.cpus {
            let isTotal = cur.name == "cpu"
            seen[cur.name] = cur
            guard isTotal ? totalCPU : perCPU, let prev = previous[cur.name],
                  let fields = Self.usage(from: prev, to: cur)
            else { continue }
            records.append(Record(
                name: "cpu",
                tags: [Tag("cpu", isTotal ? "cpu-total" : cur.name)],
                fields: fields,
                timestamp: context.now
            ))
        }
        // CPUs that went offline are forgotten; when they return, their first sample is a baseline.
        previous = seen
    }

    /// Percentages between two samples, or nil when a counter went backwards (a reset, or a CPU that
    /// went away and came back) or no time passed. Never negative, never NaN, never above 100.
    static func usage(from a: CPUTimes, to b: CPUTimes) -> [Field]? {
        let pairs: [(UInt64, UInt64)] = [
            (a.user, b.user), (a.nice, b.nice), (a.system, b.system), (a.idle, b.idle),
            (a.iowait, b.iowait), (a.irq, b.irq), (a.softirq, b.softirq), (a.steal, b.steal),
            (a.guest, b.guest), (a.guestNice, b.guestNice),
        ]
        for (old, new) in pairs where new < old { return nil }
        let user = Double(b.user - a.user), nice = Double(b.nice - a.nice)
        let system = Double(b.system - a.system), idle = Double(b.idle - a.idle)
        let iowait = Double(b.iowait - a.iowait), irq = Double(b.irq - a.irq)
        let softirq = Double(b.softirq - a.softirq), steal = Double(b.steal - a.steal)
        let guest = Double(b.guest - a.guest), guestNice = Double(b.guestNice - a.guestNice)
        // guest time is already inside user (and guest_nice inside nice), so it is not added again.
        let total = user + nice + system + idle + iowait + irq + softirq + steal
        guard total > 0 else { return nil }
        func pct(_ v: Double) -> FieldValue { .double(min(100, max(0, v * 100 / total))) }
        return [
            Field("usage_user", pct(user - guest)),
            Field("usage_system", pct(system)),
            Field("usage_idle", pct(idle)),
            Field("usage_nice", pct(nice - guestNice)),
            Field("usage_iowait", pct(iowait)),
            Field("usage_irq", pct(irq)),
            Field("usage_softirq", pct(softirq)),
            Field("usage_steal", pct(steal)),
            Field("usage_guest", pct(guest)),
            Field("usage_guest_nice", pct(guestNice)),
            Field("usage_active", pct(total - idle - iowait)),
        ]
    }
}

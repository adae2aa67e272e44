import ProcFS
import SpillwayConfig
import SpillwayCore

/// `system`: load averages, CPU count, uptime, boot time and process counts.
public struct SystemInput: Input {
    public init() {}

    public static let descriptor = InputDescriptor(name: "system", summary: "load, CPUs, uptime, boot time, processes (/proc/loadavg, uptime, stat)") { _ in
        SystemInput()
    }

    /// Each file feeds its own fields: one that is missing or unreadable (no /proc/uptime in some
    /// sandboxes) drops only those, and is reported as skipped. Only when none can be read does the
    /// collection fail.
    public mutating func gather(into records: inout [Record], report: inout InputReport, context: InputContext) throws {
        let proc = ProcFS(root: context.procRoot)
        var fields: [Field] = []
        var failures: [ProcFSError] = []
        do {
            let load = try LoadAvg.parse(proc.read("loadavg"), path: proc.path("loadavg"))
            fields += [Field("load1", .double(load.load1)), Field("load5", .double(load.load5)), Field("load15", .double(load.load15))]
        } catch {
            failures.append(error)
        }
        var stat: Stat?
        do {
            stat = try proc.parse("stat", report: &report, Stat.parse)
        } catch {
            failures.append(error)
        }
        // A cpu line left out would make the count short: then it is left out too.
        if let stat, stat.droppedCPULines == 0 { fields.append(Field("n_cpus", .int(Int64(stat.cores.count)))) }
        do throws(ProcFSError) {
            let uptime = try Uptime.parse(proc.read("uptime"), path: proc.path("uptime"))
            guard let seconds = UInt64(exactly: uptime.rounded(.down)) else {
                throw ProcFSError(path: proc.path("uptime"), line: 1, kind: "out of range", reason: "\(uptime) seconds is out of range")
            }
            fields.append(Field("uptime", .uint(seconds)))
        } catch {
            failures.append(error)
        }
        if let stat {
            if let boot = stat.bootTime { fields.append(Field("boot_time", .uint(boot))) }
            // Kernels before 2.6.23 have no procs_running/procs_blocked: those fields are left out.
            if let r = stat.procsRunning { fields.append(Field("procs_running", .uint(r))) }
            if let b = stat.procsBlocked { fields.append(Field("procs_blocked", .uint(b))) }
        }
        guard !fields.isEmpty else { throw InputError(failures.map(\.description).joined(separator: "; ")) }
        for e in failures { report.skip(e) }
        records.append(Record(name: "system", fields: fields, timestamp: context.now))
    }
}

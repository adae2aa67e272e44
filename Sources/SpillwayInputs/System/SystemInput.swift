import ProcFS
import SpillwayConfig
import SpillwayCore

/// `system`: load averages, CPU count, uptime and process counts.
public struct SystemInput: Input {
    public init() {}

    public static let descriptor = InputDescriptor(name: "system", summary: "load, CPUs, uptime, processes (/proc/loadavg, uptime, stat)") { _ in
        SystemInput()
    }

    public mutating func gather(into records: inout [Record], context: InputContext) throws {
        let proc = ProcFS(root: context.procRoot)
        let load = try LoadAvg.parse(proc.read("loadavg"), path: proc.path("loadavg"))
        let uptime = try Uptime.parse(proc.read("uptime"), path: proc.path("uptime"))
        let stat = try Stat.parse(proc.read("stat"), path: proc.path("stat"))
        var fields = [
            Field("load1", .double(load.load1)),
            Field("load5", .double(load.load5)),
            Field("load15", .double(load.load15)),
            Field("n_cpus", .int(Int64(stat.cores.count))),
            Field("uptime", .uint(UInt64(uptime))),
        ]
        // Kernels before 2.6.23 have no procs_running/procs_blocked: those fields are left out.
        if let r = stat.procsRunning { fields.append(Field("procs_running", .uint(r))) }
        if let b = stat.procsBlocked { fields.append(Field("procs_blocked", .uint(b))) }
        records.append(Record(name: "system", fields: fields, timestamp: context.now))
    }
}

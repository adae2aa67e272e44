import ProcFS
import SpillwayConfig
import SpillwayCore

/// `diskio`: I/O counters per block device, from /proc/diskstats.
public struct DiskIOInput: Input {
    /// Only devices matching one of these globs (all when empty).
    public var devices: [Glob]
    /// Whether partitions (devices with `sys_root/class/block/NAME/partition`) are reported.
    public var partitions: Bool

    public init(devices: [Glob] = [], partitions: Bool = true) {
        self.devices = devices
        self.partitions = partitions
    }

    public static let descriptor = InputDescriptor(name: "diskio", summary: "I/O counters per block device (/proc/diskstats)") { r in
        DiskIOInput(devices: r.globs("devices"), partitions: r.bool("partitions", default: true))
    }

    public mutating func gather(into records: inout [Record], context: InputContext) throws {
        let proc = ProcFS(root: context.procRoot)
        let sys = ProcFS(root: context.sysRoot)
        let stats = try DiskStats.parse(proc.read("diskstats"), path: proc.path("diskstats"))
        for d in stats {
            guard devices.isEmpty || devices.contains(where: { $0.matches(d.name) }) else { continue }
            // sysfs writes a / in a device name (cciss/c0d0) as !.
            if !partitions, sys.exists("class/block/\(d.name.replacingSlashes())/partition") { continue }
            records.append(Record(name: "diskio", tags: [Tag("name", d.name)], fields: [
                Field("reads", .uint(d.reads)),
                Field("writes", .uint(d.writes)),
                Field("read_bytes", .uint(d.sectorsRead &* 512)),
                Field("write_bytes", .uint(d.sectorsWritten &* 512)),
                Field("read_time", .uint(d.readTimeMs)),
                Field("write_time", .uint(d.writeTimeMs)),
                Field("io_time", .uint(d.ioTimeMs)),
                Field("weighted_io_time", .uint(d.weightedIOTimeMs)),
                Field("iops_in_progress", .uint(d.inProgress)),
                Field("merged_reads", .uint(d.mergedReads)),
                Field("merged_writes", .uint(d.mergedWrites)),
            ], timestamp: context.now))
        }
    }
}

extension String {
    fileprivate func replacingSlashes() -> String {
        String(map { $0 == "/" ? "!" : $0 })
    }
}

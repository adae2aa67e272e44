import ProcFS
import SpillwayConfig
import SpillwayCore

/// `diskio`: I/O counters per block device, from /proc/diskstats.
public struct DiskIOInput: Input {
    /// Only devices matching one of these globs (all when empty).
    public var devices: [Glob]
    /// Whether partitions are reported. A partition is a device with
    /// `sys_root/class/block/NAME/partition`; without sysfs block classes (no sys_root/class/block),
    /// one named as the kernel names partitions after another device of the list: `sda` → `sda1`,
    /// `nvme0n1` → `nvme0n1p1`, `mmcblk0` → `mmcblk0p1` (a disk whose name ends in a digit gets `p`).
    public var partitions: Bool

    public init(devices: [Glob] = [], partitions: Bool = true) {
        self.devices = devices
        self.partitions = partitions
    }

    public static let descriptor = InputDescriptor(name: "diskio", summary: "I/O counters per block device (/proc/diskstats)") { r in
        DiskIOInput(devices: r.globs("devices"), partitions: r.bool("partitions", default: true))
    }

    public mutating func gather(into records: inout [Record], report: inout InputReport, context: InputContext) throws {
        let proc = ProcFS(root: context.procRoot)
        let sys = ProcFS(root: context.sysRoot)
        let bytes = try proc.read("diskstats")
        var skipped = SkippedLines()
        let stats = DiskStats.parse(bytes, path: proc.path("diskstats"), skipped: &skipped)
        report.skip(skipped)
        var byNaming: Set<String>?
        if !partitions, !sys.exists("class/block") {
            // Every line's name, the unreadable ones' too: a disk whose line was left out still
            // names its partitions.
            byNaming = Self.partitionsByNaming(skipped.count == 0 ? stats.map(\.name) : DiskStats.names(bytes))
            report.note(ProcFSError(path: sys.path("class/block"), kind: "fallback",
                                    reason: "missing: partitions are told by the kernel's naming (sda1, nvme0n1p1, mmcblk0p1)"))
        }
        for d in stats {
            guard devices.isEmpty || devices.contains(where: { $0.matches(d.name) }) else { continue }
            if !partitions {
                if let byNaming {
                    if byNaming.contains(d.name) { continue }
                } else if sys.exists("class/block/\(d.name.replacingSlashes())/partition") {  // sysfs writes / (cciss/c0d0) as !
                    continue
                }
            }
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

extension DiskIOInput {
    /// The names that are partitions of another name in `names`, by the kernel's rule
    /// (block/partitions/core.c): disk name + number, with a `p` between when the disk's name ends
    /// in a digit.
    static func partitionsByNaming(_ names: [String]) -> Set<String> {
        let all = Set(names)
        var out: Set<String> = []
        for name in names {
            let digits = name.reversed().prefix { $0.isASCII && $0.isNumber }.count
            guard digits > 0, digits < name.count else { continue }
            let disk = name.dropLast(digits)
            if all.contains(String(disk)) {
                out.insert(name)
            } else if disk.last == "p", let beforeP = disk.dropLast().last, beforeP.isASCII, beforeP.isNumber,
                      all.contains(String(disk.dropLast())) {
                out.insert(name)
            }
        }
        return out
    }
}

extension String {
    fileprivate func replacingSlashes() -> String {
        String(map { $0 == "/" ? "!" : $0 })
    }
}

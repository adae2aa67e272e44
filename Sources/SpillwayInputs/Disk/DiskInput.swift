#if canImport(Glibc)
import Glibc
#endif
import ProcFS
import SpillwayConfig
import SpillwayCore

/// What statvfs(3) says of a file system, in the units Spillway needs.
public struct FileSystemStats: Sendable, Equatable {
    public var fragmentSize: UInt64
    public var blocks: UInt64
    public var blocksFree: UInt64
    public var blocksAvailable: UInt64
    public var files: UInt64
    public var filesFree: UInt64

    public init(fragmentSize: UInt64, blocks: UInt64, blocksFree: UInt64, blocksAvailable: UInt64, files: UInt64, filesFree: UInt64) {
        self.fragmentSize = fragmentSize
        self.blocks = blocks
        self.blocksFree = blocksFree
        self.blocksAvailable = blocksAvailable
        self.files = files
        self.filesFree = filesFree
    }

    /// statvfs(3) on `path`; nil when it fails (gone, no permission).
    public static func query(_ path: String) -> FileSystemStats? {
        var s = statvfs()
        // withCString: the implicit String-to-pointer conversion copies into a new array each call.
        guard path.withCString({ statvfs($0, &s) }) == 0 else { return nil }
        return FileSystemStats(
            fragmentSize: UInt64(s.f_frsize), blocks: UInt64(s.f_blocks), blocksFree: UInt64(s.f_bfree),
            blocksAvailable: UInt64(s.f_bavail), files: UInt64(s.f_files), filesFree: UInt64(s.f_ffree)
        )
    }
}

/// `disk`: space and inodes per mounted file system, from proc_root/self/mountinfo and statvfs.
public struct DiskInput: Input {
    /// File system types left out by default: virtual and in-memory ones.
    public static let defaultIgnoreFS = [
        "tmpfs", "devtmpfs", "devfs", "iso9660", "overlay", "aufs", "squashfs", "proc", "sysfs",
        "cgroup", "cgroup2", "autofs", "binfmt_misc", "bpf", "configfs", "debugfs", "devpts",
        "efivarfs", "fusectl", "fuse.lxcfs", "hugetlbfs", "mqueue", "nsfs", "pstore", "ramfs",
        "rpc_pipefs", "securityfs", "selinuxfs", "tracefs", "nfsd",
    ]

    /// Only mount points matching one of these globs (all when empty).
    public var mountPoints: [Glob]
    public var ignoreFS: Set<String>
    /// The statvfs to use (injectable for fixture tests and benchmarks).
    public var statfs: @Sendable (String) -> FileSystemStats?

    public init(mountPoints: [Glob] = [], ignoreFS: [String] = DiskInput.defaultIgnoreFS,
                statfs: @escaping @Sendable (String) -> FileSystemStats? = FileSystemStats.query) {
        self.mountPoints = mountPoints
        self.ignoreFS = Set(ignoreFS)
        self.statfs = statfs
    }

    public static let descriptor = InputDescriptor(name: "disk", summary: "space and inodes per file system (mountinfo + statvfs)") { r in
        DiskInput(mountPoints: r.globs("mount_points"), ignoreFS: r.stringArray("ignore_fs", default: defaultIgnoreFS))
    }

    public mutating func gather(into records: inout [Record], context: InputContext) throws {
        let proc = ProcFS(root: context.procRoot)
        let mounts = try MountInfo.parse(proc.read("self/mountinfo"), path: proc.path("self/mountinfo"))
        // A later mount on the same point hides the earlier one.
        var lastIndex: [String: Int] = [:]
        for (i, m) in mounts.enumerated() { lastIndex[m.mountPoint] = i }
        for (i, m) in mounts.enumerated() where lastIndex[m.mountPoint] == i {
            guard !ignoreFS.contains(m.fsType) else { continue }
            guard mountPoints.isEmpty || mountPoints.contains(where: { $0.matches(m.mountPoint) }) else { continue }
            guard let s = statfs(m.mountPoint) else { continue }
            records.append(Record(
                name: "disk",
                tags: [  // in key order: Record keeps them as given
                    Tag("device", m.source.hasPrefix("/dev/") ? String(m.source.dropFirst(5)) : m.source),
                    Tag("fstype", m.fsType),
                    Tag("mode", m.mode),
                    Tag("path", m.mountPoint),
                ],
                fields: Self.fields(s),
                timestamp: context.now
            ))
        }
    }

    /// As df: `used` counts blocks not free to anyone, `free` the blocks an unprivileged user may
    /// use, and `used_percent` is used / (used + free).
    static func fields(_ s: FileSystemStats) -> [Field] {
        let total = s.blocks &* s.fragmentSize
        let free = s.blocksAvailable &* s.fragmentSize
        let used = (s.blocks >= s.blocksFree ? s.blocks - s.blocksFree : 0) &* s.fragmentSize
        let denominator = Double(used) + Double(free)
        return [
            Field("total", .uint(total)),
            Field("free", .uint(free)),
            Field("used", .uint(used)),
            Field("used_percent", .double(denominator == 0 ? 0 : Double(used) * 100 / denominator)),
            Field("inodes_total", .uint(s.files)),
            Field("inodes_free", .uint(s.filesFree)),
            Field("inodes_used", .uint(s.files >= s.filesFree ? s.files - s.filesFree : 0)),
        ]
    }
}

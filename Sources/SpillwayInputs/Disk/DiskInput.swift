#if canImport(Glibc)
import Glibc
#endif
import ProcFS
import SpillwayConfig
import SpillwayCore

/// What statvfs(3) says of a file system, in the units Spillway needs, and the device stat(2) says
/// the path is on.
public struct FileSystemStats: Sendable, Equatable {
    public var fragmentSize: UInt64
    public var blocks: UInt64
    public var blocksFree: UInt64
    public var blocksAvailable: UInt64
    public var files: UInt64
    public var filesFree: UInt64
    /// `st_dev` of the path; nil when not asked for (on the host itself) or unknown (fixture
    /// tables that leave it out).
    public var device: DeviceNumber?

    public init(fragmentSize: UInt64, blocks: UInt64, blocksFree: UInt64, blocksAvailable: UInt64, files: UInt64, filesFree: UInt64,
                device: DeviceNumber? = nil) {
        self.fragmentSize = fragmentSize
        self.blocks = blocks
        self.blocksFree = blocksFree
        self.blocksAvailable = blocksAvailable
        self.files = files
        self.filesFree = filesFree
        self.device = device
    }

    /// statvfs(3) on `path`, and with `identify` also stat(2) (the device: which file system
    /// answers); the error (with errno's text) when one fails.
    public static func query(_ path: String, identify: Bool) throws(ProcFSError) -> FileSystemStats {
        var s = statvfs()
        var st = stat()
        // withCString: the implicit String-to-pointer conversion copies into a new array each call.
        let ok = path.withCString { p in statvfs(p, &s) == 0 && (!identify || stat(p, &st) == 0) }
        guard ok else { throw ProcFSError(path: path, kind: "unreachable", reason: String(cString: strerror(errno))) }
        return FileSystemStats(
            fragmentSize: UInt64(s.f_frsize), blocks: UInt64(s.f_blocks), blocksFree: UInt64(s.f_bfree),
            blocksAvailable: UInt64(s.f_bavail), files: UInt64(s.f_files), filesFree: UInt64(s.f_ffree),
            device: identify ? DeviceNumber(dev: UInt64(st.st_dev)) : nil
        )
    }
}

/// `disk`: space and inodes per mounted file system, from the mount table and statvfs.
///
/// On the host itself the mount table is proc_root/self/mountinfo. In a container with
/// `[agent] host_root` set, it is the host's (proc_root/1/mountinfo, the host's init, falling back to
/// self/mountinfo) and each mount point is measured at host_root + mount point. A mount point that
/// cannot be reached there, or where another file system than the table's answers (the host's mount
/// is not propagated into the container, so the path is a plain directory of the file system above
/// it), is skipped and reported: it is never measured elsewhere.
public struct DiskInput: Input {
    /// File system types left out by default: virtual and in-memory ones.
    public static let defaultIgnoreFS = [
        "tmpfs", "devtmpfs", "devfs", "iso9660", "overlay", "aufs", "squashfs", "proc", "sysfs",
        "cgroup", "cgroup2", "autofs", "binfmt_misc", "bpf", "configfs", "debugfs", "devpts",
        "efivarfs", "fusectl", "fuse.lxcfs", "hugetlbfs", "mqueue", "nsfs", "pstore", "ramfs",
        "rpc_pipefs", "securityfs", "selinuxfs", "tracefs", "nfsd",
    ]

    /// File systems whose subvolumes report their own st_dev, not the one the mount table gives:
    /// for them the check is that the path is not on the device of the mount above it (where a
    /// plain directory of an unpropagated mount point would be).
    static let perSubvolumeDevices: Set<String> = ["btrfs", "bcachefs"]

    /// Only mount points matching one of these globs (all when empty).
    public var mountPoints: [Glob]
    public var ignoreFS: Set<String>
    /// `FileSystemStats.query` (injectable for fixture tests and benchmarks).
    public var statfs: @Sendable (String, Bool) throws(ProcFSError) -> FileSystemStats

    public init(mountPoints: [Glob] = [], ignoreFS: [String] = DiskInput.defaultIgnoreFS,
                statfs: @escaping @Sendable (String, Bool) throws(ProcFSError) -> FileSystemStats = FileSystemStats.query) {
        self.mountPoints = mountPoints
        self.ignoreFS = Set(ignoreFS)
        self.statfs = statfs
    }

    public static let descriptor = InputDescriptor(name: "disk", summary: "space and inodes per file system (mountinfo + statvfs)") { r in
        DiskInput(mountPoints: r.globs("mount_points"), ignoreFS: r.stringArray("ignore_fs", default: defaultIgnoreFS))
    }

    public mutating func gather(into records: inout [Record], report: inout InputReport, context: InputContext) throws {
        let proc = ProcFS(root: context.procRoot)
        let hostRoot = context.hostRoot
        var mounts: [Mount]
        if hostRoot.isEmpty {
            mounts = try proc.parse("self/mountinfo", report: &report, MountInfo.parse)
        } else {
            do {
                mounts = try proc.parse("1/mountinfo", report: &report, MountInfo.parse)
            } catch {
                // This process's own table: the host's mounts are those at or below host_root,
                // named here with host_root in front.
                let own: [Mount]
                do {
                    own = try proc.parse("self/mountinfo", report: &report, MountInfo.parse)
                } catch let second {
                    throw InputError("neither the host's mount table (\(error)) nor this process's (\(second)) can be read: is the host's / mounted at host_root \(hostRoot)?")
                }
                mounts = own.compactMap { m in
                    var m = m
                    if m.mountPoint == hostRoot {
                        m.mountPoint = "/"
                    } else if m.mountPoint.hasPrefix(hostRoot + "/") {
                        m.mountPoint = String(m.mountPoint.dropFirst(hostRoot.count))
                    } else {
                        return nil
                    }
                    return m
                }
                report.note(ProcFSError(path: error.path, kind: "fallback",
                                        reason: "\(error.reason): the host's mount table cannot be read, so the mounts below host_root in this process's own (self/mountinfo) are measured"))
            }
        }
        // A later mount on the same point hides the earlier one.
        var lastIndex: [String: Int] = [:]
        for (i, m) in mounts.enumerated() { lastIndex[m.mountPoint] = i }
        for (i, m) in mounts.enumerated() where lastIndex[m.mountPoint] == i {
            guard !ignoreFS.contains(m.fsType) else { continue }
            guard mountPoints.isEmpty || mountPoints.contains(where: { $0.matches(m.mountPoint) }) else { continue }
            let path = hostRoot.isEmpty ? m.mountPoint : hostRoot + (m.mountPoint == "/" ? "" : m.mountPoint)
            let s: FileSystemStats
            do {
                s = try statfs(path, !hostRoot.isEmpty)
            } catch {
                let e = ProcFSError(path: path, kind: error.kind, reason: "mount point \(m.mountPoint) cannot be measured: \(error.reason)")
                // On the host, a mount this user may not measure (another user's FUSE mount) or one
                // gone since the table was read is said once, not counted; under host_root it is a
                // host mount this container cannot reach.
                if hostRoot.isEmpty { report.note(e) } else { report.skip(e) }
                continue
            }
            if !hostRoot.isEmpty, let want = m.device, let got = s.device, want != got,
               !Self.perSubvolumeDevices.contains(m.fsType) || got == Self.deviceAbove(m.mountPoint, in: mounts, visible: lastIndex) {
                report.skip(ProcFSError(
                    path: path, kind: "not mounted here",
                    reason: "mount point \(m.mountPoint) is device \(want) (\(m.fsType)) in the mount table, but \(path) is on device \(got): the host's mount does not reach this container (mount the host's / with rslave propagation: docker run -v /:/host:ro,rslave; Kubernetes mountPropagation: HostToContainer), so it is left out rather than measured elsewhere"))
                continue
            }
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
    /// The device of the visible mount that holds `mountPoint`'s parent directory (the longest
    /// other mount point above it).
    static func deviceAbove(_ mountPoint: String, in mounts: [Mount], visible: [String: Int]) -> DeviceNumber? {
        var best: Mount?
        for (point, i) in visible where point != mountPoint {
            let above = point == "/" ? mountPoint.hasPrefix("/") : mountPoint.hasPrefix(point + "/")
            if above, point.count > (best?.mountPoint.count ?? -1) { best = mounts[i] }
        }
        return best?.device
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

import Foundation
import SpillwayTestSupport
import Testing

/// The agent in a container, as it sees the host: the host's / under `host_root` with its /proc and
/// /sys below, and a mount table (the host init's, proc/1/mountinfo) naming host paths. Here the
/// host tree is fake but the file systems are real: a small tmpfs is mounted at `host/data`, listed
/// in the mount table as the host's /data with the tmpfs's device number, so statvfs has a known
/// answer; /var/lib/postgres is listed but only a plain directory (the mount did not reach the
/// container) and /mnt/gone is listed but absent.
@Suite(.serialized) struct Container {
    struct HostTree {
        let dir: URL
        var host: URL { dir.appendingPathComponent("host") }
        var data: URL { host.appendingPathComponent("data") }

        init() throws {
            dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-container-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: dir.appendingPathComponent("host/var/lib/postgres"), withIntermediateDirectories: true)
            let files = [
                "proc/stat": "cpu  2000 0 1000 20000 0 0 0 0 0 0\ncpu0 1000 0 500 10000 0 0 0 0 0 0\ncpu1 1000 0 500 10000 0 0 0 0 0 0\nbtime 1700000000\nprocs_running 3\nprocs_blocked 1\n",
                // No /proc/uptime, as in some sandboxes: only the uptime field is lost.
                "proc/loadavg": "0.25 0.50 0.75 2/300 4242\n",
                "proc/meminfo": "MemTotal:        2000000 kB\nMemFree:          500000 kB\nMemAvailable:    1000000 kB\nBuffers:          100000 kB\nCached:           400000 kB\nSlab:              50000 kB\nSReclaimable:      20000 kB\nDirty:                12 kB\nSwapTotal:             0 kB\nSwapFree:              0 kB\n",
                // The host's interfaces (its init's network namespace), and the container's own.
                "proc/1/net/dev": "Inter-|   Receive  |  Transmit\n face |bytes packets|bytes packets\n  eth0: 1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0\nibr10:30: 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
                "proc/net/dev": "Inter-|   Receive  |  Transmit\n face |bytes packets|bytes packets\n  veth0: 1 1 0 0 0 0 0 0 2 2 0 0 0 0 0 0\n",
                // No sys/class/block: partitions are told by their names.
                "proc/diskstats": "   8 0 sda 10 1 80 5 20 2 160 7 0 9 12\n   8 1 sda1 10 1 80 5 20 2 160 7 0 9 12\n 259 0 nvme0n1 10 1 80 5 20 2 160 7 0 9 12\n 259 1 nvme0n1p1 10 1 80 5 20 2 160 7 0 9 12\n",
            ]
            for (path, text) in files {
                let url = host.appendingPathComponent(path)
                try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
                try text.write(to: url, atomically: true, encoding: .utf8)
            }
        }

        /// The mount table, written once the tmpfs is mounted (its device number is then known).
        func writeMountTable() throws {
            let root = try device(host.path), data = try device(self.data.path)
            // A device no file system here has: the mount listed at /var/lib/postgres did not reach
            // the container.
            let absent = "4095:1048575"
            let table = """
                22 1 \(root) / / rw,relatime - ext4 /dev/sda1 rw
                23 22 0:22 / /proc rw,nosuid,nodev,noexec - proc proc rw
                25 22 \(data) / /data rw,relatime - xfs /dev/sdb1 rw
                26 22 \(absent) / /var/lib/postgres rw,relatime - ext4 /dev/sdc1 rw
                27 22 8:49 / /mnt/gone ro,relatime - ext4 /dev/sdd1 rw

                """
            let url = host.appendingPathComponent("proc/1/mountinfo")
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try table.write(to: url, atomically: true, encoding: .utf8)
        }

        func device(_ path: String) throws -> String {
            var st = stat()
            guard stat(path, &st) == 0 else { throw CocoaError(.fileNoSuchFile) }
            let dev = UInt64(st.st_dev)
            let major = ((dev >> 8) & 0xFFF) | ((dev >> 32) & ~UInt64(0xFFF))
            let minor = (dev & 0xFF) | ((dev >> 12) & 0xFFFF_FF00)
            return "\(major):\(minor)"
        }

        func remove() {
            unmount(data)
            try? FileManager.default.removeItem(at: dir)
        }
    }

    static let inputs = """
        [[inputs.disk]]
        [[inputs.diskio]]
        partitions = false
        [[inputs.net]]
        [[inputs.system]]
        [[inputs.mem]]
        """

    @Test(.enabled(if: canMount, "skipped: this process cannot mount a tmpfs (needs root and the right to mount; CI runs as root)"))
    func onceAndRunAgainstAHostTree() throws {
        let tree = try HostTree()
        defer { tree.remove() }
        try #require(mountTmpfs(tree.data, size: "4m"))
        // 1 MiB of data on the tmpfs: used is exactly that (tmpfs allocates 4 KiB pages).
        try Data(count: 1 << 20).write(to: tree.data.appendingPathComponent("blob"))
        try tree.writeMountTable()
        var rootStats = statvfs()
        #expect(statvfs(tree.host.path, &rootStats) == 0)
        let rootTotal = UInt64(rootStats.f_blocks) * UInt64(rootStats.f_frsize)

        let server = try RedisServer()
        defer { server.stop(); server.removeFiles() }
        let agent = try AgentProcess(redisPort: server.port,
                                     inputs: Self.inputs, agentExtra: "host_root = \"\(tree.host.path)\"")

        // check: the roots follow host_root, and no warning about proc_root.
        let check = try spillway(["check", "--config", agent.config.path])
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
        #expect(check.stdout.contains("host_root=\(tree.host.path) proc_root=\(tree.host.path)/proc sys_root=\(tree.host.path)/sys"), "\(check.stdout)")
        #expect(!check.stdout.contains("host_root is not set"))

        // once: the exact records, and what was left out, on stderr.
        let once = try spillway(["once", "--config", agent.config.path])
        #expect(once.status == 0, "\(once.stderr)")
        let lines = try once.stdout.split(separator: "\n").map { try parseLine(String($0)) }
        let disks = lines.filter { $0.measurement == "disk" }
        #expect(disks.map { $0.tags["path"] ?? "" } == ["/", "/data"], "\(once.stdout)")
        let data = try #require(disks.first { $0.tags["path"] == "/data" })
        #expect(data.tags["device"] == "sdb1" && data.tags["fstype"] == "xfs")
        #expect(data.fields["total"] == "4194304u" && data.fields["used"] == "1048576u" && data.fields["free"] == "3145728u", "\(data.fields)")
        #expect(disks.first { $0.tags["path"] == "/" }?.fields["total"] == "\(rootTotal)u")
        #expect(once.stderr.contains("\(tree.host.path)/var/lib/postgres: mount point /var/lib/postgres is device 4095:"), "\(once.stderr)")
        #expect(once.stderr.contains("\(tree.host.path)/mnt/gone: mount point /mnt/gone cannot be measured: No such file or directory"), "\(once.stderr)")
        #expect(once.stderr.contains("\(tree.host.path)/proc/uptime: No such file or directory"), "\(once.stderr)")
        #expect(once.stderr.contains("\(tree.host.path)/sys/class/block: missing: partitions are told by the kernel's naming"), "\(once.stderr)")
        #expect(lines.filter { $0.measurement == "diskio" }.map { $0.tags["name"] ?? "" } == ["nvme0n1", "sda"])
        #expect(lines.filter { $0.measurement == "net" }.map { $0.tags["interface"] ?? "" } == ["eth0", "ibr10:30"])
        let system = try #require(lines.first { $0.measurement == "system" })
        #expect(system.fields["boot_time"] == "1700000000u" && system.fields["load5"] == "0.5" && system.fields["uptime"] == nil)
        #expect(system.fields["n_cpus"] == "2i" && system.fields["procs_running"] == "3u")

        // run: the same records reach Redis, the left-out parts are counted and logged once each.
        try agent.start()
        let doc = try agent.waitFor(20) { number($0, "counters.written") >= 12 && number($0, "counters.input_errors") >= 9 }
        #expect(agent.stop() == 0)
        #expect(number(doc, "counters.input_errors") >= 9, "\(doc)")
        let entries = try streamEntries(server, "metrics:h:disk")
        let paths = Set(entries.compactMap { $0["tag_path"] })
        #expect(paths == ["/", "/data"], "\(entries)")
        let firstData = try #require(entries.first { $0["tag_path"] == "/data" })
        #expect(firstData["total"] == "4194304" && firstData["used"] == "1048576", "\(firstData)")
        let log = agent.logText
        let leftOut = log.components(separatedBy: "\n").filter { $0.contains("input left part of a collection out") }
        #expect(leftOut.filter { $0.contains("/var/lib/postgres") }.count == 1, "\(log)")
        #expect(leftOut.filter { $0.contains("/mnt/gone") }.count == 1, "\(log)")
        #expect(leftOut.filter { $0.contains("proc/uptime") }.count == 1, "\(log)")
        #expect(log.components(separatedBy: "partitions are told by the kernel's naming").count == 2, "\(log)")
    }

    /// The container reads the host's /proc without host_root: check says what disk would do.
    @Test func procRootWithoutHostRootIsAWarning() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("spillway-procroot-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = dir.appendingPathComponent("agent.toml")
        try "[agent]\nproc_root = \"/host/proc\"\ndata_dir = \"\(dir.path)/data\"\n[[inputs.disk]]\n".write(to: config, atomically: true, encoding: .utf8)
        let r = try spillway(["check", "--config", config.path])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("agent.proc_root: proc_root is \"/host/proc\" but host_root is not set"), "\(r.stdout)")
        // host_root with an older agent.toml's proc_root = "/proc": the container's own tables.
        try "[agent]\nhost_root = \"/host\"\nproc_root = \"/proc\"\ndata_dir = \"\(dir.path)/data\"\n[[inputs.net]]\n".write(to: config, atomically: true, encoding: .utf8)
        let r2 = try spillway(["check", "--config", config.path])
        #expect(r2.status == 0 && r2.stdout.contains("agent.proc_root: host_root is \"/host\" but proc_root is \"/proc\", not below it"), "\(r2.stdout)")
        // A host_root where nothing is mounted (the -v /:/host was forgotten).
        try "[agent]\nhost_root = \"\(dir.path)/nothing\"\ndata_dir = \"\(dir.path)/data\"\n[[inputs.mem]]\n".write(to: config, atomically: true, encoding: .utf8)
        let r3 = try spillway(["check", "--config", config.path])
        #expect(r3.status == 0 && r3.stdout.contains("agent.host_root: host_root \"\(dir.path)/nothing\" is not a directory here"), "\(r3.stdout)")
        try FileManager.default.createDirectory(atPath: dir.path + "/nothing", withIntermediateDirectories: true)
        let r4 = try spillway(["check", "--config", config.path])
        #expect(r4.status == 0 && r4.stdout.contains("\(dir.path)/nothing/proc/stat cannot be read"), "\(r4.stdout)")
    }
}

/// Every entry of a stream as its field → value map (redis-cli --raw prints the ID, then the fields
/// and values one a line).
func streamEntries(_ server: RedisServer, _ key: String) throws -> [[String: String]] {
    let lines = try server.cli(["--raw", "XRANGE", key, "-", "+"]).split(separator: "\n").map(String.init)
    var entries: [[String: String]] = []
    var i = 0
    while i < lines.count {
        guard lines[i].range(of: #"^[0-9]+-[0-9]+$"#, options: .regularExpression) != nil else { i += 1; continue }
        var fields: [String: String] = [:]
        var j = i + 1
        while j + 1 < lines.count, lines[j].range(of: #"^[0-9]+-[0-9]+$"#, options: .regularExpression) == nil {
            fields[lines[j]] = lines[j + 1]
            j += 2
        }
        entries.append(fields)
        i = j
    }
    return entries
}

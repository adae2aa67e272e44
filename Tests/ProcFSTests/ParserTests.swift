import Foundation
import Testing
@testable import ProcFS

/// Real files captured from a Debian 12 VM (2 vCPUs), under Fixtures/proc, read through `ProcFS(root:)`.
let captured = ProcFS(root: URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/proc").path)

func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

/// Runs a parser that leaves bad lines out; here any line left out is thrown, so a test sees it.
func strict<T>(_ parse: (inout SkippedLines) throws -> T) throws -> T {
    var skipped = SkippedLines()
    let value = try parse(&skipped)
    if let first = skipped.first.first { throw first }
    return value
}

/// What a parser left out, and what it kept.
func lenient<T>(_ parse: (inout SkippedLines) throws -> T) rethrows -> (T, [ProcFSError]) {
    var skipped = SkippedLines()
    let value = try parse(&skipped)
    return (value, skipped.first)
}

@Suite struct CapturedFiles {
    @Test func stat() throws {
        let s = try strict { try Stat.parse(captured.read("stat"), skipped: &$0) }
        #expect(s.cpus.map(\.name) == ["cpu", "cpu0", "cpu1"])
        let c1 = s.cpus[2]
        #expect([c1.user, c1.nice, c1.system, c1.idle, c1.iowait, c1.irq, c1.softirq, c1.steal, c1.guest, c1.guestNice]
            == [13022, 0, 3580, 42812, 816, 0, 73, 957, 0, 0])
        #expect(s.procsRunning == 1)
        #expect(s.procsBlocked == 0)
        #expect(s.cores.count == 2)
    }

    @Test func meminfo() throws {
        let m = try strict { try MemInfo.parse(captured.read("meminfo"), skipped: &$0) }
        #expect(m.memTotal == 24_684_092 * 1024)
        #expect(m.memFree == 23_585_324 * 1024)
        #expect(m.memAvailable == 24_344_828 * 1024)
        #expect(m.buffers == 5728 * 1024)
        #expect(m.cached == 934_268 * 1024)
        #expect(m.slab == 97688 * 1024)
        #expect(m.swapTotal == 0)
    }

    @Test func mountinfo() throws {
        let mounts = try strict { try MountInfo.parse(captured.read("self/mountinfo"), skipped: &$0) }
        #expect(mounts.count == 20)
        let root = try #require(mounts.first { $0.mountPoint == "/" })
        #expect(root.source == "/dev/vda")
        #expect(root.fsType == "ext4")
        #expect(root.mode == "rw")
        let ro = try #require(mounts.first { $0.mountPoint == "/mnt/sandboxing/model_tools_env/v1/python" })
        #expect(ro.mode == "ro")
    }

    @Test func diskstats() throws {
        let disks = try strict { try DiskStats.parse(captured.read("diskstats"), skipped: &$0) }
        #expect(disks.count == 10)
        let vda = try #require(disks.first { $0.name == "vda" })
        #expect(vda.major == 254 && vda.minor == 0)
        #expect(vda.reads == 31652 && vda.mergedReads == 5465 && vda.sectorsRead == 4_446_642 && vda.readTimeMs == 32088)
        #expect(vda.writes == 8209 && vda.mergedWrites == 20629 && vda.sectorsWritten == 1_458_048 && vda.writeTimeMs == 11455)
        #expect(vda.inProgress == 0 && vda.ioTimeMs == 12924 && vda.weightedIOTimeMs == 43964)
    }

    @Test func netdev() throws {
        let n = try strict { try NetDev.parse(captured.read("net/dev"), skipped: &$0) }
        #expect(n.map(\.name) == ["lo", "ifb0", "ifb1", "eth0"])
        #expect(n[3].rxBytes == 10_882_172 && n[3].rxPackets == 293 && n[3].txBytes == 17690 && n[3].txPackets == 209)
    }

    @Test func loadavgAndUptime() throws {
        let l = try LoadAvg.parse(captured.read("loadavg"))
        #expect(l == LoadAvg(load1: 0.67, load5: 0.64, load15: 0.32))
        #expect(try Uptime.parse(captured.read("uptime")) == 611.42)
    }

    @Test func missingFileNamesThePath() {
        #expect(throws: ProcFSError.self) { try captured.read("no/such/file") }
        do {
            _ = try captured.read("nope")
        } catch {
            #expect(error.path.hasSuffix("Fixtures/proc/nope"))
            #expect(error.reason == "No such file or directory")
        }
    }

    @Test func readIsBounded() {
        let small = ProcFS(root: captured.root, maxFileBytes: 100)
        #expect(throws: ProcFSError.self) { try small.read("meminfo") }
    }
}

@Suite struct OddInput {
    @Test func mountinfoEscapes() throws {
        let m = try strict { MountInfo.parse(bytes("1 2 3:4 / /a\\040b\\011c\\012d\\134e rw - ext4 /dev/x\\040y rw\n"), skipped: &$0) }
        #expect(m[0].mountPoint == "/a b\tc\nd\\e")
        #expect(m[0].source == "/dev/x y")
        // A malformed escape is kept as written.
        #expect(MountInfo.unescapeOctal(ArraySlice(bytes("a\\09x\\4"))) == "a\\09x\\4")
    }

    @Test func mountinfoWithManyOptionalFields() throws {
        let m = try strict { MountInfo.parse(bytes("36 35 98:0 /mnt1 /mnt/2 ro,noatime master:1 shared:2 unbindable - ext3 /dev/root rw,errors=continue\n"), skipped: &$0) }
        #expect(m == [Mount(mountPoint: "/mnt/2", source: "/dev/root", fsType: "ext3", options: "ro,noatime", device: DeviceNumber(major: 98, minor: 0))])
    }

    @Test func statOlderKernelsAndCPUNames() throws {
        let s = try strict { try Stat.parse(bytes("cpu 1 2 3 4\ncpu12 5 6 7 8 9\n"), skipped: &$0) }
        #expect(s.cpus[1].name == "cpu12" && s.cpus[1].iowait == 9 && s.cpus[1].irq == 0)
        #expect(throws: ProcFSError.self) { try strict { try Stat.parse(bytes("cpux 1 2 3 4\n"), skipped: &$0) } }
        #expect(throws: ProcFSError.self) { try strict { try Stat.parse(bytes("cpu 1 2 3\n"), skipped: &$0) } }
        #expect(throws: ProcFSError.self) { try strict { try Stat.parse(bytes("procs_running x\ncpu 1 2 3 4\n"), skipped: &$0) } }
        #expect(throws: ProcFSError.self) { try strict { try Stat.parse(bytes("cpu 99999999999999999999 1 1 1\n"), skipped: &$0) } }
    }

    @Test func meminfoUnitsAndLines() throws {
        let m = try strict { try MemInfo.parse(bytes("MemTotal: 10\nHugePages_Total: 0\nMemFree:  4 kB\n"), skipped: &$0) }
        #expect(m.memTotal == 10)
        #expect(m.memFree == 4096)
        let (m2, skipped) = try lenient { try MemInfo.parse(bytes("MemTotal: 1 kB\nMemFree: 1 MB\n"), skipped: &$0) }
        #expect(m2.memTotal == 1024 && m2.memFree == nil)
        #expect(skipped.map(\.line) == [2])
        #expect(skipped.first?.reason.contains("unknown unit") == true)
    }

    @Test func netdevOldFormatWithoutSpace() throws {
        let n = try strict { NetDev.parse(bytes("h1|\nh2|\n  eth0:123 4 0 0 0 0 0 0 567 8 0 0 0 0 0 0\n"), skipped: &$0) }
        #expect(n[0].name == "eth0" && n[0].rxBytes == 123 && n[0].txBytes == 567)
    }

    @Test func decimals() {
        #expect(parseDecimal(ArraySlice(bytes("0.52"))) == 0.52)
        #expect(parseDecimal(ArraySlice(bytes("1.74"))) == 1.74)
        #expect(parseDecimal(ArraySlice(bytes("12"))) == 12)
        #expect(parseDecimal(ArraySlice(bytes("."))) == nil)
        #expect(parseDecimal(ArraySlice(bytes("1.2.3"))) == nil)
        #expect(parseDecimal(ArraySlice(bytes("-1"))) == nil)
        #expect(parseUInt64(ArraySlice(bytes("18446744073709551615"))) == UInt64.max)
        #expect(parseUInt64(ArraySlice(bytes("18446744073709551616"))) == nil)
    }

    /// Every prefix of every captured file either parses or throws: never a crash.
    @Test func truncationsNeverCrash() throws {
        for file in ["stat", "meminfo", "self/mountinfo", "diskstats", "net/dev", "loadavg", "uptime"] {
            let full = try captured.read(file)
            var parsed = 0
            for n in stride(from: 0, through: full.count, by: max(1, full.count / 200)) {
                let cut = Array(full.prefix(n))
                let ok: Bool
                switch file {
                case "stat": ok = (try? strict { try Stat.parse(cut, skipped: &$0) }) != nil
                case "meminfo": ok = (try? strict { try MemInfo.parse(cut, skipped: &$0) }) != nil
                case "self/mountinfo": ok = (try? strict { MountInfo.parse(cut, skipped: &$0) }) != nil
                case "diskstats": ok = (try? strict { DiskStats.parse(cut, skipped: &$0) }) != nil
                case "net/dev": ok = (try? strict { NetDev.parse(cut, skipped: &$0) }) != nil
                case "loadavg": ok = (try? LoadAvg.parse(cut)) != nil
                default: ok = (try? Uptime.parse(cut)) != nil
                }
                if ok { parsed += 1 }
            }
            #expect(parsed > 0, "\(file): no prefix parsed")
        }
    }

    /// Random bytes never crash a parser.
    @Test func garbageNeverCrashes() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<300 {
            let junk = (0..<Int.random(in: 0..<400, using: &rng)).map { _ in
                [UInt8(ascii: " "), UInt8(ascii: "\n"), UInt8(ascii: ":"), UInt8(ascii: "-"), UInt8(ascii: "\\"),
                 UInt8(ascii: "1"), UInt8(ascii: "c"), UInt8(ascii: "p"), UInt8(ascii: "u"), 0xFF][Int.random(in: 0..<10, using: &rng)]
            }
            _ = try? lenient { try Stat.parse(junk, skipped: &$0) }
            _ = try? lenient { try MemInfo.parse(junk, skipped: &$0) }
            _ = lenient { MountInfo.parse(junk, skipped: &$0) }
            _ = lenient { DiskStats.parse(junk, skipped: &$0) }
            _ = lenient { NetDev.parse(junk, skipped: &$0) }
            _ = try? LoadAvg.parse(junk)
            _ = try? Uptime.parse(junk)
        }
        #expect(Bool(true))
    }
}

@Test func readAtExactLimitSucceeds() throws {
    let full = try captured.read("loadavg")
    let exact = ProcFS(root: captured.root, maxFileBytes: full.count)
    #expect(try exact.read("loadavg") == full)
    let under = ProcFS(root: captured.root, maxFileBytes: full.count - 1)
    #expect(throws: ProcFSError.self) { try under.read("loadavg") }
}

@Test func mountMode() {
    #expect(Mount(mountPoint: "/", source: "x", fsType: "ext4", options: "ro").mode == "ro")
    #expect(Mount(mountPoint: "/", source: "x", fsType: "ext4", options: "rw,relatime").mode == "rw")
    #expect(Mount(mountPoint: "/", source: "x", fsType: "ext4", options: "nosuid,ro,noatime").mode == "ro")
    #expect(Mount(mountPoint: "/", source: "x", fsType: "ext4", options: "nosuid,rox").mode == "rw")
    #expect(Mount(mountPoint: "/", source: "x", fsType: "ext4", options: "").mode == "rw")
}

/// One line that cannot be read drops that line, never the file: the other lines are kept and the
/// dropped one is handed back with its line number and kind.
@Suite struct OneBadLine {
    @Test func netdevAliasLineIsNamedUpToTheLastColon() {
        let text = "h1|\nh2|\n  eth0: 1 2 0 0 0 0 0 0 3 4 0 0 0 0 0 0\nibr10:30:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n"
        let (n, skipped) = lenient { NetDev.parse(bytes(text), skipped: &$0) }
        #expect(n.map(\.name) == ["eth0", "ibr10:30"])
        #expect(skipped.isEmpty)
    }

    @Test func netdevBadLineDropsOnlyThatLine() {
        let text = "h1|\nh2|\neth0: 1 2 0 0 0 0 0 0 3 4 0 0 0 0 0 0\neth1: 1 x 0 0 0 0 0 0 3 4 0 0 0 0 0 0\neth2: 1 2 3\ngarbage\neth3: 5 6 0 0 0 0 0 0 7 8 0 0 0 0 0 0\n"
        let (n, skipped) = lenient { NetDev.parse(bytes(text), path: "net/dev", skipped: &$0) }
        #expect(n.map(\.name) == ["eth0", "eth3"])
        #expect(n[1].rxBytes == 5 && n[1].txPackets == 8)
        #expect(skipped.map(\.line) == [4, 5, 6])
        #expect(skipped.map(\.kind) == ["not a counter", "too few columns", "no name"])
        #expect(skipped[0].description == "net/dev:4: eth1: \"x\" is not a counter")
    }

    @Test func statBadLinesDropOnlyThemAndBtimeIsRead() throws {
        let text = "cpu 1 2 3 4\ncpu0 1 x 3 4\ncpu1 5 6 7 8\ncpuz 1 2 3 4\ncpu2 1 2\nbtime 1700000000\nprocs_running ?\nprocs_blocked 2\n"
        let (s, skipped) = try lenient { try Stat.parse(bytes(text), skipped: &$0) }
        #expect(s.cpus.map(\.name) == ["cpu", "cpu1"])
        #expect(s.bootTime == 1_700_000_000)
        #expect(s.procsRunning == nil && s.procsBlocked == 2)
        #expect(skipped.map(\.line) == [2, 4, 5, 7])
        #expect(skipped.map(\.kind) == ["not a counter", "bad cpu name", "too few columns", "no value"])
        // No readable cpu line at all is the file's error (the lines are still handed back).
        var left = SkippedLines()
        #expect(throws: ProcFSError.self) { try Stat.parse(bytes("cpu 1 x 3 4\n"), skipped: &left) }
        #expect(left.count == 1)
    }

    @Test func meminfoBadValueDropsOnlyThatKey() throws {
        let (m, skipped) = try lenient { try MemInfo.parse(bytes("MemTotal: 10 kB\nMemFree: ? kB\nBuffers: 1 MB\nCached: 3 kB\n"), skipped: &$0) }
        #expect(m.memTotal == 10240 && m.memFree == nil && m.buffers == nil && m.cached == 3072)
        #expect(skipped.map(\.kind) == ["no value", "unknown unit"])
        var left = SkippedLines()
        #expect(throws: ProcFSError.self) { try MemInfo.parse(bytes("MemTotal: x\nMemFree: 1\n"), skipped: &left) }
    }

    @Test func diskstatsAndMountinfoBadLines() {
        let disks = "   8 0 sda 1 2 3 4 5 6 7 8 9 10 11\n   8 1 sda1 1 2 x 4 5 6 7 8 9 10 11\nx y\n   8 16 sdb 1 2 3\n 8 17 sdb1 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17\n"
        let (d, ds) = lenient { DiskStats.parse(bytes(disks), skipped: &$0) }
        #expect(d.map(\.name) == ["sda", "sdb1"])
        #expect(ds.map(\.kind) == ["not a counter", "no device", "too few columns"])
        let mounts = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\nbroken\n23 22 0:40 / /run rw shared:1 tmpfs tmpfs rw\n24 22 259:3 / /data ro - xfs /dev/nvme0n1p3 rw\n"
        let (m, ms) = lenient { MountInfo.parse(bytes(mounts), skipped: &$0) }
        #expect(m.map(\.mountPoint) == ["/", "/data"])
        #expect(m.map(\.device) == [DeviceNumber(major: 8, minor: 1), DeviceNumber(major: 259, minor: 3)])
        #expect(ms.map(\.line) == [2, 3])
        // A device that is not major:minor: the line is left out (never measured unchecked).
        let (bad, badSkipped) = lenient { MountInfo.parse(bytes("22 1 8-1 / / rw - ext4 /dev/sda1 rw\n"), skipped: &$0) }
        #expect(bad.isEmpty && badSkipped.map(\.kind) == ["bad device"])
    }

    /// The device numbers of mountinfo are those stat(2) reports: checked on this machine's /proc
    /// (procfs everywhere; a btrfs root would report a subvolume's own device).
    @Test func mountinfoDeviceIsStatsDevice() throws {
        let mounts = try strict { try MountInfo.parse(ProcFS(root: "/proc").read("self/mountinfo"), skipped: &$0) }
        let proc = try #require(mounts.last { $0.mountPoint == "/proc" })
        var st = stat()
        #expect(stat("/proc", &st) == 0)
        #expect(proc.device == DeviceNumber(dev: UInt64(st.st_dev)))
        #expect(DeviceNumber(dev: 0x0000_0000_0000_0801) == DeviceNumber(major: 8, minor: 1))
        #expect(DeviceNumber(dev: 0x0011_0302) == DeviceNumber(major: 0x103, minor: 0x102))
    }
}

/// A read cut short leaves a last line without its newline: its last value may be cut too, so the
/// line is left out, in every parser.
@Suite struct CutLastLine {
    @Test func aLastLineWithoutNewlineIsLeftOut() throws {
        let (m, ms) = try lenient { try MemInfo.parse(bytes("MemTotal: 16000000 kB\nMemFree: 4000000 kB\nMemAvailable:    9000"), skipped: &$0) }
        #expect(m.memAvailable == nil && m.memFree == 4_096_000_000 && m.unreadable == ["MemAvailable"])
        #expect(ms.map(\.kind) == ["cut off"] && ms.first?.line == 3)
        let (s, ss) = try lenient { try Stat.parse(bytes("cpu 1 2 3 4\ncpu0 1 2 3 4\ncpu1 1 2 3 4"), skipped: &$0) }
        #expect(s.cpus.map(\.name) == ["cpu", "cpu0"] && s.droppedCPULines == 1 && ss.map(\.kind) == ["cut off"])
        let (d, ds) = lenient { DiskStats.parse(bytes("8 0 sda 1 2 3 4 5 6 7 8 9 10 11\n8 1 sda1 1 2 3 4 5 6 7 8 9 10 1"), skipped: &$0) }
        #expect(d.map(\.name) == ["sda"] && ds.map(\.kind) == ["cut off"])
        let (n, ns) = lenient { NetDev.parse(bytes("h|\nh|\neth0: 1 2 0 0 0 0 0 0 3 4 0 0 0 0 0 0\neth1: 1 2 0 0 0 0 0 0 3 4 0 0 0 0 0 1"), skipped: &$0) }
        #expect(n.map(\.name) == ["eth0"] && ns.map(\.kind) == ["cut off"])
        let (mi, mis) = lenient { MountInfo.parse(bytes("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n23 22 8:2 / /boot rw - ext4 /dev/sda2 r"), skipped: &$0) }
        #expect(mi.map(\.mountPoint) == ["/"] && mis.map(\.kind) == ["cut off"])
        // A line the parser does not use may be cut: nothing is left out.
        let (s2, ss2) = try lenient { try Stat.parse(bytes("cpu 1 2 3 4\nctxt 12"), skipped: &$0) }
        #expect(s2.cpus.count == 1 && ss2.isEmpty)
    }

    @Test func manyBadLinesCostACountNotMemory() {
        let junk = Array(String(repeating: "x\n", count: 100_000).utf8)
        var skipped = SkippedLines()
        let n = NetDev.parse(junk, skipped: &skipped)
        #expect(n.isEmpty && skipped.count == 99_998 && skipped.first.count == SkippedLines.kept)
        #expect(DiskStats.names(bytes("8 0 sda x\n8 1 sda1 1 2\n")) == ["sda", "sda1"])
    }
}

import Foundation
import Testing
@testable import ProcFS

/// Real files captured from a Debian 12 VM (2 vCPUs), under Fixtures/proc, read through `ProcFS(root:)`.
let captured = ProcFS(root: URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/proc").path)

func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

@Suite struct CapturedFiles {
    @Test func stat() throws {
        let s = try Stat.parse(captured.read("stat"))
        #expect(s.cpus.map(\.name) == ["cpu", "cpu0", "cpu1"])
        let c1 = s.cpus[2]
        #expect([c1.user, c1.nice, c1.system, c1.idle, c1.iowait, c1.irq, c1.softirq, c1.steal, c1.guest, c1.guestNice]
            == [13022, 0, 3580, 42812, 816, 0, 73, 957, 0, 0])
        #expect(s.procsRunning == 1)
        #expect(s.procsBlocked == 0)
        #expect(s.cores.count == 2)
    }

    @Test func meminfo() throws {
        let m = try MemInfo.parse(captured.read("meminfo"))
        #expect(m.memTotal == 24_684_092 * 1024)
        #expect(m.memFree == 23_585_324 * 1024)
        #expect(m.memAvailable == 24_344_828 * 1024)
        #expect(m.buffers == 5728 * 1024)
        #expect(m.cached == 934_268 * 1024)
        #expect(m.slab == 97688 * 1024)
        #expect(m.swapTotal == 0)
    }

    @Test func mountinfo() throws {
        let mounts = try MountInfo.parse(captured.read("self/mountinfo"))
        #expect(mounts.count == 20)
        let root = try #require(mounts.first { $0.mountPoint == "/" })
        #expect(root.source == "/dev/vda")
        #expect(root.fsType == "ext4")
        #expect(root.mode == "rw")
        let ro = try #require(mounts.first { $0.mountPoint == "/mnt/sandboxing/model_tools_env/v1/python" })
        #expect(ro.mode == "ro")
    }

    @Test func diskstats() throws {
        let disks = try DiskStats.parse(captured.read("diskstats"))
        #expect(disks.count == 10)
        let vda = try #require(disks.first { $0.name == "vda" })
        #expect(vda.major == 254 && vda.minor == 0)
        #expect(vda.reads == 31652 && vda.mergedReads == 5465 && vda.sectorsRead == 4_446_642 && vda.readTimeMs == 32088)
        #expect(vda.writes == 8209 && vda.mergedWrites == 20629 && vda.sectorsWritten == 1_458_048 && vda.writeTimeMs == 11455)
        #expect(vda.inProgress == 0 && vda.ioTimeMs == 12924 && vda.weightedIOTimeMs == 43964)
    }

    @Test func netdev() throws {
        let n = try NetDev.parse(captured.read("net/dev"))
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
        let m = try MountInfo.parse(bytes("1 2 3:4 / /a\\040b\\011c\\012d\\134e rw - ext4 /dev/x\\040y rw\n"))
        #expect(m[0].mountPoint == "/a b\tc\nd\\e")
        #expect(m[0].source == "/dev/x y")
        // A malformed escape is kept as written.
        #expect(MountInfo.unescapeOctal(ArraySlice(bytes("a\\09x\\4"))) == "a\\09x\\4")
    }

    @Test func mountinfoWithManyOptionalFields() throws {
        let m = try MountInfo.parse(bytes("36 35 98:0 /mnt1 /mnt/2 ro,noatime master:1 shared:2 unbindable - ext3 /dev/root rw,errors=continue\n"))
        #expect(m == [Mount(mountPoint: "/mnt/2", source: "/dev/root", fsType: "ext3", options: "ro,noatime")])
    }

    @Test func statOlderKernelsAndCPUNames() throws {
        let s = try Stat.parse(bytes("cpu 1 2 3 4\ncpu12 5 6 7 8 9\n"))
        #expect(s.cpus[1].name == "cpu12" && s.cpus[1].iowait == 9 && s.cpus[1].irq == 0)
        #expect(throws: ProcFSError.self) { try Stat.parse(bytes("cpux 1 2 3 4\n")) }
        #expect(throws: ProcFSError.self) { try Stat.parse(bytes("cpu 1 2 3\n")) }
        #expect(throws: ProcFSError.self) { try Stat.parse(bytes("procs_running x\ncpu 1 2 3 4\n")) }
        #expect(throws: ProcFSError.self) { try Stat.parse(bytes("cpu 99999999999999999999 1 1 1\n")) }
    }

    @Test func meminfoUnitsAndLines() throws {
        let m = try MemInfo.parse(bytes("MemTotal: 10\nHugePages_Total: 0\nMemFree:  4 kB\n"))
        #expect(m.memTotal == 10)
        #expect(m.memFree == 4096)
        do {
            _ = try MemInfo.parse(bytes("MemTotal: 1 kB\nMemFree: 1 MB\n"))
            Issue.record("unknown unit accepted")
        } catch {
            #expect(error.line == 2)
            #expect(error.reason.contains("unknown unit"))
        }
    }

    @Test func netdevOldFormatWithoutSpace() throws {
        let n = try NetDev.parse(bytes("h1|\nh2|\n  eth0:123 4 0 0 0 0 0 0 567 8 0 0 0 0 0 0\n"))
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
                case "stat": ok = (try? Stat.parse(cut)) != nil
                case "meminfo": ok = (try? MemInfo.parse(cut)) != nil
                case "self/mountinfo": ok = (try? MountInfo.parse(cut)) != nil
                case "diskstats": ok = (try? DiskStats.parse(cut)) != nil
                case "net/dev": ok = (try? NetDev.parse(cut)) != nil
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
            _ = try? Stat.parse(junk)
            _ = try? MemInfo.parse(junk)
            _ = try? MountInfo.parse(junk)
            _ = try? DiskStats.parse(junk)
            _ = try? NetDev.parse(junk)
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

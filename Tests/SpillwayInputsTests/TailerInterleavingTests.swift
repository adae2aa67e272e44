import Foundation
import SpillwayCore
@testable import SpillwayInputs
import Testing

/// A small deterministic random source (tests repeat exactly per seed).
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite(.serialized) struct TailInterleavings {
    /// logrotate `copytruncate`, `rotate 3`, done step by step (the copy written in chunks) while a
    /// writer appends, with the tailer polling at random points between the steps (discovery due or
    /// not): every line once, in order, whatever the interleaving.
    @Test func copytruncateWithPollsBetweenEveryStep() throws {
        var failures: [String] = []
        let only = ProcessInfo.processInfo.environment["TAIL_SEED"].flatMap { Int($0) }
        for seed in (only.map { $0..<($0 + 1) } ?? 0..<(Int(ProcessInfo.processInfo.environment["TAIL_SEEDS"] ?? "") ?? 300)) where failures.count < 3 {
            var trace: [String] = []
            var rng = SplitMix(state: UInt64(seed))
            let h = try TailHarness()
            let app = h.path("app.log")
            _ = FileManager.default.createFile(atPath: app, contents: nil)
            let t = h.tailer(h.options(["app.log*"]) { o in
                o.watchInterval = 1_000_000_000
                o.rotateWait = 5_000_000_000
                o.partialTimeout = 5_000_000_000
            })
            h.poll(t)
            let wfd = open(app, O_WRONLY | O_APPEND | O_CLOEXEC)
            var written = 0
            func writeLines(_ n: Int) {
                for _ in 0..<n {
                    let line = "c-\(String(format: "%06d", written)) " + String(repeating: "x", count: 40) + "\n"
                    _ = line.utf8CString.withUnsafeBufferPointer { write(wfd, $0.baseAddress, line.utf8.count) }
                    written += 1
                }
            }
            // Whether the tailer saw lines of the file since its last truncation. (It polls every
            // 100 ms: lines are not written and rotated away again between two polls. When they are,
            // they are read once, but after the newer ones.)
            var writtenAtTruncation = 0, seenSinceTruncation = false
            func maybePoll() {
                guard Bool.random(using: &rng) else { return }
                if written > writtenAtTruncation { seenSinceTruncation = true }
                let step: Int64 = [100_000_000, 100_000_000, 1_100_000_000, 300_000_000].randomElement(using: &rng)!
                let n0 = h.messages.count, k0 = h.notices.count
                h.poll(t, times: Int.random(in: 1...2, using: &rng), step: step)
                trace.append("  poll step=\(step / 1_000_000)ms -> +\(h.messages.count - n0) lines \(h.messages[n0...].first.map { String($0.prefix(8)) } ?? "")..\(h.messages[n0...].last.map { String($0.prefix(8)) } ?? "") \(h.notices[k0...].map { $0.replacingOccurrences(of: h.dir.path + "/", with: "") })")
            }
            func rotate() {
                if !seenSinceTruncation {
                    let n0 = h.messages.count
                    h.poll(t, step: 100_000_000)
                    trace.append("  (poll) -> +\(h.messages.count - n0)")
                }
                func ino(_ p: String) -> String { var st = stat(); return stat(p, &st) == 0 ? "\(st.st_ino)" : "-" }
                trace.append("rotate at \(written): app.log \(ino(app)) .1 \(ino(app + ".1")) .2 \(ino(app + ".2")) .3 \(ino(app + ".3"))")
                unlink(app + ".3"); maybePoll()
                rename(app + ".2", app + ".3"); maybePoll()
                rename(app + ".1", app + ".2"); maybePoll()
                // the copy, written in chunks
                let content = FileManager.default.contents(atPath: app)!
                let cfd = open(app + ".1", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
                maybePoll()
                var at = 0
                while at < content.count {
                    let n = min(content.count - at, [100, 4096, 65536].randomElement(using: &rng)!)
                    trace.append("copy chunk \(at)+\(n) of \(content.count)")
                    _ = content.withUnsafeBytes { write(cfd, $0.baseAddress! + at, n) }
                    at += n
                    maybePoll()
                }
                close(cfd)
                _ = truncate(app, 0)
                (writtenAtTruncation, seenSinceTruncation) = (written, false)
                trace.append("truncated")
                maybePoll()
            }
            for _ in 0..<4 {
                for _ in 0..<Int.random(in: 1...8, using: &rng) {
                    let n = Int.random(in: 1...60, using: &rng)
                    trace.append("write \(written)..<\(written + n)")
                    writeLines(n)
                    maybePoll()
                }
                rotate()
            }
            writeLines(3)
            maybePoll()
            rotate()
            writeLines(5)
            h.poll(t, times: 12, step: 1_100_000_000)
            close(wfd)
            let expected = (0..<written).map { "c-\(String(format: "%06d", $0)) " + String(repeating: "x", count: 40) }
            if h.messages != expected {
                if only != nil { print(trace.joined(separator: "\n")) }
                let at = (0..<min(h.messages.count, expected.count)).first { h.messages[$0] != expected[$0] } ?? min(h.messages.count, expected.count)
                failures.append("seed \(seed): first difference at line \(at): \(h.messages[max(0, at - 2)..<min(h.messages.count, at + 3)].map { $0.prefix(8) })")
                failures.append("seed \(seed): \(h.messages.count) lines for \(written) written, \(Set(h.messages).count) distinct; notices: \(h.notices.map { $0.replacingOccurrences(of: h.dir.path + "/", with: "") })")
            }
        }
        #expect(failures.isEmpty, "\(failures.joined(separator: "\n"))")
    }

    /// A file deleted while followed is read to its end and let go; a file created after that may
    /// get its inode (ext4 hands a freed inode out again at once). It is a new file, read from its
    /// start, not the one let go.
    @Test(arguments: ["*.log", "app.log"]) func inodeOfAFileLetGoIsReused(_ pattern: String) throws {
        let h = try TailHarness()
        func inode(_ name: String) -> UInt64 { var st = stat(); return stat(h.path(name), &st) == 0 ? UInt64(st.st_ino) : 0 }
        let name = pattern == "app.log" ? "app.log" : "other.log"
        try h.write("app.log", h.lines("a", 0..<5))
        let t = h.tailer(h.options([pattern]))
        h.poll(t)
        let old = inode("app.log")
        unlink(h.path("app.log"))
        for _ in 0..<4 where !t.files.isEmpty { h.poll(t) }  // read to its end, let go after rotate_wait
        #expect(t.files.isEmpty && t.openCount == 0)
        // ext4 hands the freed inode out to the next file created in the directory, unless a test
        // running beside this one takes it first: tried a few times.
        for _ in 0..<50 {
            try h.write(name, h.lines("b", 0..<3))
            if inode(name) == old { break }
            unlink(h.path(name))
        }
        #expect(inode(name) == old, "the filesystem under the temp dir did not reuse the inode: this test shows nothing")
        h.poll(t, times: 2)
        try h.append(name, h.lines("b", 3..<4))
        h.poll(t, times: 2)
        #expect(h.messages == h.expected("a", 0..<5) + h.expected("b", 0..<4))
    }
}

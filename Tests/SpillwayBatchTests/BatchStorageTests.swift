import Foundation
@testable import SpillwayBatch
import SpillwayCore
import SpillwayBatch
import Testing

@Suite struct BatchStorage {
    @Test func aFinishedBatchsStorageIsReusedAndThePoolIsBounded() {
        let pool = BatchPool()
        func big() -> [UInt8] {
            var b: [UInt8] = []
            b.reserveCapacity(200_000)
            b.append(1)
            return b
        }
        var c: [UInt8]? = big()
        let base = c!.withUnsafeBufferPointer { $0.baseAddress }
        pool.give(c!)
        c = nil
        #expect(pool.count == 1)
        let again = pool.take()
        #expect(pool.count == 0)
        // Emptied, the same memory, its capacity kept.
        #expect(again.isEmpty && again.capacity >= 200_000)
        #expect(again.withUnsafeBufferPointer { $0.baseAddress } == base)
        // Small storage is not kept, nor storage over the bound; at most `limit` are.
        pool.give([1, 2, 3])
        var huge: [UInt8] = []
        huge.reserveCapacity(BatchPool.maxBytes + 1)
        pool.give(huge)
        #expect(pool.count == 0)
        for _ in 0..<(BatchPool.limit + 3) { pool.give(big()) }
        #expect(pool.count == BatchPool.limit)
        #expect(pool.take().isEmpty)
    }

    @Test func aBatchSharingItsStorageCopiesItBeforeChanging() {
        var a = EncodedBatch(recordCount: 1)
        a.append(RedisCommand(["XADD", "k", "*", "f", "1"]), keyArgument: 1, role: .record(0))
        var b = a
        b.append(RedisCommand(["XADD", "k2", "*", "f", "2"]), keyArgument: 1, role: .record(1))
        #expect(a.commandCount == 1 && a.span(0).argc == 5)
        #expect(a.commands.map(\.command.strings) == [["XADD", "k", "*", "f", "1"]])
        #expect(b.commands.map(\.command.strings) == [["XADD", "k", "*", "f", "1"], ["XADD", "k2", "*", "f", "2"]])
        #expect(b.commands.map { String(decoding: $0.key, as: UTF8.self) } == ["k", "k2"])
        #expect(String(decoding: b.argument(1, 3), as: UTF8.self) == "f" && b.name(1) == "XADD")
    }
}

@Suite struct RESPWriting {
    /// Contents of every length around the header's sizes, whole and in parts: the bytes are RESP.
    @Test func argumentsOfEveryHeaderLength() {
        for n in [0, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 10_000, 100_000] {
            let text = String(repeating: "x", count: n)
            var whole = RedisCommand()
            whole.append(text)
            var parts = RedisCommand()
            parts.write(maxBytes: n, maxArguments: 1) { w in
                if n == 0 { w.end(); return }
                w.part(String(text.prefix(n / 2)))
                w.part(String(text.suffix(n - n / 2)))
                w.end()
            }
            let expected = Array("$\(n)\r\n\(text)\r\n".utf8)
            #expect(whole.bytes == expected, "whole, \(n) bytes")
            #expect(parts.bytes == expected, "in parts, \(n) bytes")
            #expect(whole.strings == [text] && parts.strings == [text])
        }
    }

    @Test func numbersAndFieldValues() {
        var c = RedisCommand()
        c.append(Int64(-12345678901234))
        c.append(FieldValue.uint(18_446_744_073_709_551_615))
        c.append(FieldValue.double(0.25))
        c.append(FieldValue.double(1e300))
        c.append(FieldValue.bool(true))
        c.append(FieldValue.string(""))
        c.append(double: 42)
        #expect(c.strings == ["-12345678901234", "18446744073709551615", "0.25", "1e+300", "true", "", "42"])
        #expect(String(decoding: c.bytes, as: UTF8.self)
                == "$15\r\n-12345678901234\r\n$20\r\n18446744073709551615\r\n$4\r\n0.25\r\n$6\r\n1e+300\r\n$4\r\ntrue\r\n$0\r\n\r\n$2\r\n42\r\n")
    }

    /// Commands of 1 to 120 arguments written in place: the array header (room for two digits)
    /// is right for every count, and the key is found where it is.
    @Test func commandsOfEveryArgumentCount() throws {
        var b = EncodedBatch()
        for argc in 1...120 {
            let key = argc / 2
            b.writeCommand(maxBytes: 16 * argc, maxArguments: argc, keyArgument: key, role: .record(argc - 1)) { w in
                for a in 0..<argc { w.argument("a\(a)") }
            }
        }
        b.recordCount = 120
        for i in 0..<120 {
            let argc = i + 1
            #expect(b.span(i).argc == argc)
            #expect(b.command(i).command.strings == (0..<argc).map { "a\($0)" })
            #expect(String(decoding: b.key(i), as: UTF8.self) == "a\(argc / 2)")
            let resp = Array(b.bytes[b.span(i).range])
            #expect(resp.starts(with: Array("*\(argc)\r\n$2\r\na0\r\n".utf8)))
            #expect(RESP.validateCommand(resp[...], mark: argc / 2)?.argc == argc)
        }
        // Spans are back to back: the batch is its commands' RESP and nothing else.
        #expect(b.span(119).byteStart + b.span(119).byteCount == b.bytes.count)
        let back = try EncodedBatch(serialized: b.serialized())
        #expect(back.bytes == b.bytes && back.commandCount == 120)
    }

    @Test func aReplacedArgumentKeepsTheRest() {
        var b = EncodedBatch(recordCount: 1)
        b.append(RedisCommand(["XADD", "k", "MAXLEN", "~", "10", "5-0", "f", "v"]), keyArgument: 1, role: .record(0))
        var out = EncodedBatch(recordCount: 1)
        out.append(command: 0, of: b, role: .record(0), replacing: 5, with: Array("7-1".utf8))
        #expect(out.command(0).command.strings == ["XADD", "k", "MAXLEN", "~", "10", "7-1", "f", "v"])
        #expect(String(decoding: out.key(0), as: UTF8.self) == "k")
        let joined = b.after(out)
        #expect(joined.commandCount == 2 && joined.recordCount == 2 && joined.role(1) == .record(1))
        #expect(String(decoding: joined.key(1), as: UTF8.self) == "k" && joined.argument(1, 5).elementsEqual("5-0".utf8))
    }

    @Test func keyCountsComeFromTheCommandsKeys() {
        var b = EncodedBatch(recordCount: 5)
        for (i, k) in ["a", "a", "b", "a"].enumerated() {
            b.append(RedisCommand(["XADD", k, "*", "f", "1"]), keyArgument: 1, role: .record(i))
        }
        b.append(RedisCommand(["TS.MADD", "s1", "1", "2", "s2", "1", "3"]), keyArgument: 0, role: .samples(owners: [4, 4]))
        b.append(RedisCommand(["TS.CREATE", "s1"]), keyArgument: 1, role: .setup)
        #expect(b.keyCounts == [KeyBytes(Array("a".utf8)): 3, KeyBytes(Array("b".utf8)): 1, KeyBytes(Array("s1".utf8)): 1])
    }
}

extension RESP {
    /// For the tests, read independently of how it was written: one whole command (`*argc`, then
    /// argc bulk strings) at the start of `b`, ending exactly at its end; argc and the content range
    /// of argument `mark`, or nil when it is not that.
    static func validateCommand(_ b: ArraySlice<UInt8>, mark: Int) -> (argc: Int, marked: Range<Int>)? {
        guard let (argc, first) = readHeader(b, at: b.startIndex, marker: UInt8(ascii: "*")), argc > mark else { return nil }
        var at = first
        var marked = at..<at
        for a in 0..<argc {
            guard let (n, next) = readHeader(b, at: at, marker: UInt8(ascii: "$")), n <= b.endIndex - next - 2,
                  b[next + n] == 13, b[next + n + 1] == 10 else { return nil }
            if a == mark { marked = next..<(next + n) }
            at = next + n + 2
        }
        guard at == b.endIndex else { return nil }
        return (argc, marked)
    }
}

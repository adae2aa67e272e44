import Foundation
@testable import RedisSink
import Testing

@Suite struct BatchStorage {
    @Test func aFinishedBatchsStorageIsReusedAndThePoolIsBounded() {
        let pool = ArgumentPool()
        func big() -> RedisCommand {
            var c = RedisCommand()
            c.reserve(bytes: 200_000, arguments: 10_000)
            c.append("XADD")
            return c
        }
        var c: RedisCommand? = big()
        let base = c!.bytes.withUnsafeBufferPointer { $0.baseAddress }
        pool.give(c!)
        c = nil
        #expect(pool.count == 1)
        let again = pool.take()
        #expect(pool.count == 0)
        // Emptied, the same memory, its capacity kept.
        #expect(again.argc == 0 && again.bytes.isEmpty)
        #expect(again.bytes.capacity >= 200_000 && again.lengths.capacity >= 10_000)
        #expect(again.bytes.withUnsafeBufferPointer { $0.baseAddress } == base)
        // Small storage is not kept, nor storage over the bound; at most `limit` are.
        pool.give(RedisCommand(["PING"]))
        var huge = RedisCommand()
        huge.reserve(bytes: ArgumentPool.maxBytes + 1, arguments: 1)
        pool.give(huge)
        #expect(pool.count == 0)
        for _ in 0..<(ArgumentPool.limit + 3) { pool.give(big()) }
        #expect(pool.count == ArgumentPool.limit)
        #expect(pool.take().bytes.isEmpty)
    }

    @Test func aBatchSharingItsStorageCopiesItBeforeChanging() {
        var a = EncodedBatch(recordCount: 1)
        a.append(RedisCommand(["XADD", "k", "*", "f", "1"]), keyArgument: 1, role: .record(0))
        var b = a
        b.append(RedisCommand(["XADD", "k2", "*", "f", "2"]), keyArgument: 1, role: .record(1))
        #expect(a.commandCount == 1 && a.arguments.argc == 5)
        #expect(a.commands.map(\.command.strings) == [["XADD", "k", "*", "f", "1"]])
        #expect(b.commands.map(\.command.strings) == [["XADD", "k", "*", "f", "1"], ["XADD", "k2", "*", "f", "2"]])
        #expect(b.commands.map { String(decoding: $0.key, as: UTF8.self) } == ["k", "k2"])
        #expect(String(decoding: b.argument(1, 3), as: UTF8.self) == "f" && b.name(1) == "XADD")
    }
}

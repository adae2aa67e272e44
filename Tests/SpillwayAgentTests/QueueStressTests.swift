import Foundation
import RedisSink
import SpillwayAgent
import SpillwayCore
import Testing

/// Four producer threads push into the queue while one consumer takes (bounded: 4 × 20,000 records,
/// 30 s at most). Every record is taken or counted as dropped, and each producer's records come out
/// in the order pushed.
@Test func queueUnderContentionLosesNothingUncounted() throws {
    let queue = RecordQueue(limit: 5_000, batchSize: 500)
    let producers = 4, perProducer = 20_000
    let group = DispatchGroup()
    for p in 0..<producers {
        DispatchQueue.global().async(group: group) {
            var i = 0
            while i < perProducer {
                let n = min(100, perProducer - i)
                queue.push((i..<(i + n)).map {
                    QueuedRecord(record: Record(name: "p\(p)", fields: [Field("i", .int(Int64($0)))], timestamp: 0), route: p)
                })
                i += n
            }
        }
    }
    let done = DispatchSemaphore(value: 0)
    nonisolated(unsafe) var taken: [[Int64]] = Array(repeating: [], count: producers)
    let consumer = Thread {
        let deadline = monotonicNanoseconds() + 30_000_000_000
        while monotonicNanoseconds() < deadline {
            let batch = queue.take(deadline: monotonicNanoseconds() + 10_000_000)
            for q in batch {
                if case .int(let i) = q.record.fields[0].value { taken[q.route].append(i) }
            }
            if batch.isEmpty, queue.isClosed, queue.count == 0 { break }
        }
        done.signal()
    }
    consumer.start()
    group.wait()
    queue.close()
    #expect(done.wait(timeout: .now() + 35) == .success)
    let total = taken.reduce(0) { $0 + $1.count }
    #expect(Int64(total) + queue.dropped == Int64(producers * perProducer))
    #expect(queue.pushed == Int64(producers * perProducer))
    for p in 0..<producers {
        #expect(zip(taken[p], taken[p].dropFirst()).allSatisfy { $0 < $1 }, "producer \(p) out of order")
    }
}

/// Tailed lines are never dropped: metrics give way, a line producer waits for room (and gives up
/// only when told to stop), and records come out in arrival order across both lanes.
@Test func linesWaitForRoomWhileMetricsDrop() throws {
    func records(_ prefix: String, _ range: Range<Int>, line: Bool) -> [QueuedRecord] {
        range.map { i in
            let checkpoint = line ? FileCheckpoint(identity: FileIdentity(device: 1, inode: 1), fingerprint: 0, fingerprintLength: 0,
                                                   offset: Int64(i), size: Int64(i), path: "/l") : nil
            return QueuedRecord(record: Record(name: "\(prefix)\(i)", fields: [Field("v", .int(1))], timestamp: 0), route: 0, checkpoint: checkpoint)
        }
    }
    let queue = RecordQueue(limit: 10, batchSize: 5)
    queue.push(records("m", 0..<4, line: false))
    #expect(queue.pushLines(records("l", 0..<4, line: true)) { false })
    // 4 + 4 + 6 > 10: the 4 oldest metrics go, never a line.
    #expect(queue.push(records("m", 4..<10, line: false)) == 4)
    #expect(queue.dropped == 4 && queue.count == 10)
    // Full: a line producer waits, and gives up when told to stop.
    let start = monotonicNanoseconds()
    var polls = 0
    #expect(!queue.pushLines(records("l", 4..<6, line: true)) { polls += 1; return polls > 3 })
    #expect(monotonicNanoseconds() - start >= 200_000_000 && queue.count == 10)
    let taken = queue.take(deadline: monotonicNanoseconds()).map(\.record.name) + queue.take(deadline: monotonicNanoseconds()).map(\.record.name)
    #expect(taken == ["l0", "l1", "l2", "l3", "m4", "m5", "m6", "m7", "m8", "m9"])
    // Room again: the waiting producer's lines go in.
    #expect(queue.pushLines(records("l", 4..<6, line: true)) { false })
    #expect(queue.take(deadline: monotonicNanoseconds()).map(\.record.name) == ["l4", "l5"])
}

/// A reload's new queue goes on counting where the old one stopped.
@Test func aQueueCarriesTheCountsOfTheOneItReplaces() {
    let old = RecordQueue(limit: 2, batchSize: 10)
    let r = QueuedRecord(record: Record(name: "m", fields: [Field("v", .int(1))], timestamp: 1), route: 0)
    #expect(old.push([r, r, r]) == 1)
    _ = old.take(deadline: 0)
    let new = RecordQueue(limit: 100, batchSize: 10, carrying: old)
    new.push([r])
    #expect(new.pushed == 4 && new.dropped == 1 && new.count == 1 && new.limit == 100)
}

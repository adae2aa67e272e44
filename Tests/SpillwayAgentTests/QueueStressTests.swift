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

@testable import SpillwayCore
import Testing

@Suite struct LineChunks {
    func text(_ s: String, _ w: inout LineChunkWriter) -> LineText {
        var s = s
        return s.withUTF8 { w.append(UnsafeRawBufferPointer($0)) }
    }

    /// Short lines share a chunk until the next would not fit (so each chunk is at least three
    /// quarters full); a line over a quarter of a chunk gets one of its own, sized to it, and the
    /// lines after it go on in the shared chunk.
    @Test func shortLinesShareChunksAndLongOnesGetTheirOwn() {
        var w = LineChunkWriter(capacity: 1000)
        var texts: [LineText] = []
        var expected: [String] = []
        for i in 0..<40 {
            let line = i == 17 ? String(repeating: "L", count: 251) : "line \(i) " + String(repeating: "x", count: 200 + i % 50)
            texts.append(text(line, &w))
            expected.append(line)
        }
        #expect(texts.map(\.string) == expected)
        let long = texts[17]
        #expect(long.chunk.capacity == 251 && long.chunk !== texts[16].chunk && texts[18].chunk === texts[16].chunk)
        // Chunks of the short lines: each one full to at least three quarters before the next.
        var used: [ObjectIdentifier: Int] = [:]
        var order: [LineChunk] = []
        for (i, t) in texts.enumerated() where i != 17 {
            if used[ObjectIdentifier(t.chunk)] == nil { order.append(t.chunk) }
            used[ObjectIdentifier(t.chunk), default: 0] += Int(t.count)
        }
        #expect(order.count >= 10 && order.allSatisfy { $0.capacity == 1000 })
        #expect(order.dropLast().allSatisfy { used[ObjectIdentifier($0)]! >= 750 })
        #expect(w.current === order.last)
    }

    @Test func utf8IsCheckedAndRepairedAsAStringWould() {
        var w = LineChunkWriter()
        let cases: [[UInt8]] = [
            [], Array("ascii only, longer than eight bytes".utf8), Array("é ü 漢字 🙂".utf8),
            [0x61, 0xFF, 0x62], [0xC3, 0x28], [0xE2, 0x82], Array("ok then".utf8) + [0xF0, 0x9F, 0x99],
        ]
        for bytes in cases {
            let valid = String(validating: bytes, as: UTF8.self) != nil
            #expect(bytes.withUnsafeBytes { isValidUTF8($0) } == valid, "\(bytes)")
            let t = bytes.withUnsafeBufferPointer { w.append(text: $0) }
            #expect(Array(t.bytes) == Array(String(decoding: bytes, as: UTF8.self).utf8), "\(bytes)")
        }
    }
}

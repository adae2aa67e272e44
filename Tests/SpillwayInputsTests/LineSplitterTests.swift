@testable import SpillwayInputs
import Testing

/// A line as the tests compare it.
private struct Cut: Equatable, CustomStringConvertible {
    var text: String
    var truncated = false
    var end: Int64
    var description: String { "\(text.debugDescription)\(truncated ? " (truncated)" : "") ..\(end)" }
}

private func cut(_ line: LineSplitter.Line) -> Cut {
    Cut(text: String(decoding: line.bytes, as: UTF8.self), truncated: line.truncated, end: line.end)
}

/// The held line taken as it is (nil when none is held).
private func takePartial(_ splitter: inout LineSplitter) -> Cut? {
    var taken: Cut?
    let took = splitter.takePartial { taken = cut($0) }
    #expect(took == (taken != nil))
    return taken
}

/// Feeds `chunks` one after the other; the lines they complete, in order.
private func feed(_ splitter: inout LineSplitter, _ chunks: [String]) -> [Cut] {
    var out: [Cut] = []
    for chunk in chunks { splitter.feed(Array(chunk.utf8)) { out.append(cut($0)) } }
    return out
}

/// What the splitter holds after a feed: the partial line, whether it was cut, where it starts, and
/// the offset past the bytes fed.
private struct Held: Equatable {
    var partial: String
    var truncated: Bool
    var lineStart: Int64
    var offset: Int64

    init(_ s: LineSplitter) {
        partial = String(decoding: s.partial, as: UTF8.self)
        truncated = s.partialTruncated
        lineStart = s.lineStart
        offset = s.offset
    }

    init(partial: String, truncated: Bool = false, lineStart: Int64, offset: Int64) {
        self.partial = partial
        self.truncated = truncated
        self.lineStart = lineStart
        self.offset = offset
    }
}

private let sample = "first line\nsecond\n\nthird\r\nlast-partial"

@Suite struct LineSplitterTests {
    @Test func linesAndTheirEnds() {
        var s = LineSplitter(maxLineBytes: 100, offset: 0)
        #expect(feed(&s, [sample]) == [
            Cut(text: "first line", end: 11),
            Cut(text: "second", end: 18),
            Cut(text: "", end: 19),
            Cut(text: "third", end: 26),
        ])
        #expect(Held(s) == Held(partial: "last-partial", lineStart: 26, offset: 38))
        #expect(s.hasPartial)
    }

    @Test func offsetsStartWhereTheSplitterStarts() {
        var s = LineSplitter(maxLineBytes: 100, offset: 1000)
        #expect(feed(&s, ["ab\ncd", "e\n"]) == [Cut(text: "ab", end: 1003), Cut(text: "cde", end: 1007)])
        #expect(Held(s) == Held(partial: "", lineStart: 1007, offset: 1007))
        #expect(!s.hasPartial)
    }

    /// Cut at every byte offset into two feeds (and fed byte by byte), the same lines come out with
    /// the same ends, and the same rest is held.
    @Test(arguments: [
        (sample, 100),
        ("0123456789abcdefghij0123456789\nok\n\n0123456789abcdef\n0123456789abcdefX\nrest-of-it-longer-than-16", 16),
        ("\r\n\n0123456789abcde\r\n0123456789abcdef\r\n012345678901234\rXYZ\nx\r", 16),
    ])
    func anySplitGivesTheSameLines(text: String, maxLineBytes: Int) {
        let bytes = Array(text.utf8)
        var whole = LineSplitter(maxLineBytes: maxLineBytes, offset: 7)
        let expected = feed(&whole, [text])
        #expect(!expected.isEmpty)
        for k in 0...bytes.count {
            var s = LineSplitter(maxLineBytes: maxLineBytes, offset: 7)
            var got: [Cut] = []
            s.feed(Array(bytes[..<k])) { got.append(cut($0)) }
            s.feed(Array(bytes[k...])) { got.append(cut($0)) }
            #expect(got == expected, "split at \(k)")
            #expect(Held(s) == Held(whole), "split at \(k)")
        }
        var byByte = LineSplitter(maxLineBytes: maxLineBytes, offset: 7)
        var got: [Cut] = []
        for b in bytes { byByte.feed([b]) { got.append(cut($0)) } }
        #expect(got == expected)
        #expect(Held(byByte) == Held(whole))
    }

    @Test func emptyLines() {
        var s = LineSplitter(maxLineBytes: 16, offset: 0)
        #expect(feed(&s, ["\n\n", "\r\n", "\n"]) == [
            Cut(text: "", end: 1), Cut(text: "", end: 2), Cut(text: "", end: 4), Cut(text: "", end: 5),
        ])
        #expect(Held(s) == Held(partial: "", lineStart: 5, offset: 5))
        #expect(takePartial(&s) == nil)
    }

    @Test func noNewline() {
        var s = LineSplitter(maxLineBytes: 16, offset: 10)
        #expect(feed(&s, ["abc", "def"]) == [])
        #expect(Held(s) == Held(partial: "abcdef", lineStart: 10, offset: 16))
        // Taken as it is: it ends where the bytes end, and what follows is a new line.
        #expect(takePartial(&s) == Cut(text: "abcdef", end: 16))
        #expect(Held(s) == Held(partial: "", lineStart: 16, offset: 16))
        #expect(takePartial(&s) == nil)
        #expect(feed(&s, ["gh\n"]) == [Cut(text: "gh", end: 19)])
    }

    @Test func emptyFeedChangesNothing() {
        var s = LineSplitter(maxLineBytes: 16, offset: 3)
        #expect(feed(&s, ["ab", ""]) == [])
        #expect(Held(s) == Held(partial: "ab", lineStart: 3, offset: 5))
    }

    /// As `max_line_bytes` says (docs/inputs.md): a longer line is cut there and marked truncated;
    /// the rest of it is skipped, up to its newline, which it still ends at.
    @Test func longLinesAreCutAndTheRestSkipped() {
        var s = LineSplitter(maxLineBytes: 16, offset: 0)
        #expect(feed(&s, ["0123456789abcdef\n", "0123456789abcdefX\n", "0123456789abcdefghijklmnopqrstuvwxyz\n", "ok\n"]) == [
            Cut(text: "0123456789abcdef", end: 17),
            Cut(text: "0123456789abcdef", truncated: true, end: 35),
            Cut(text: "0123456789abcdef", truncated: true, end: 72),
            Cut(text: "ok", end: 75),
        ])
        // Held without its newline: at most the bound is kept, marked truncated.
        #expect(feed(&s, ["0123456789", "abcdefghij", "klm"]) == [])
        #expect(Held(s) == Held(partial: "0123456789abcdef", truncated: true, lineStart: 75, offset: 98))
        #expect(takePartial(&s) == Cut(text: "0123456789abcdef", truncated: true, end: 98))
        #expect(Held(s) == Held(partial: "", lineStart: 98, offset: 98))
        // The next line is not truncated.
        #expect(feed(&s, ["a", "b\n"]) == [Cut(text: "ab", end: 101)])
    }

    /// One CR before the newline is dropped, after the cut at the bound (so a CR that takes a line
    /// past the bound makes it truncated).
    @Test func crlf() {
        var s = LineSplitter(maxLineBytes: 16, offset: 0)
        #expect(feed(&s, ["a\r\n", "a\rb\n", "a\r\r\n", "\r\r\n"]) == [
            Cut(text: "a", end: 3),
            Cut(text: "a\rb", end: 7),
            Cut(text: "a\r", end: 11),
            Cut(text: "\r", end: 14),
        ])
        #expect(feed(&s, ["012345678901234\r\n", "0123456789abcdef\r\n", "012345678901234\rXYZ\n"]) == [
            Cut(text: "012345678901234", end: 31),
            Cut(text: "0123456789abcdef", truncated: true, end: 49),
            Cut(text: "012345678901234", truncated: true, end: 69),
        ])
        // A partial line taken as it is loses its CR too.
        #expect(feed(&s, ["abc\r"]) == [])
        #expect(takePartial(&s) == Cut(text: "abc", end: 73))
    }

    @Test func restartForgetsTheHeldLine() {
        var s = LineSplitter(maxLineBytes: 16, offset: 0)
        #expect(feed(&s, ["one\ntw", "0123456789abcdefghij"]) == [Cut(text: "one", end: 4)])
        #expect(Held(s) == Held(partial: "tw0123456789abcd", truncated: true, lineStart: 4, offset: 26))
        s.restart(at: 0)
        #expect(Held(s) == Held(partial: "", lineStart: 0, offset: 0))
        #expect(feed(&s, ["x\n"]) == [Cut(text: "x", end: 2)])
    }
}

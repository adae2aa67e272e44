#if canImport(Glibc)
import Glibc
#endif

/// Cuts the bytes read from a tailed file into lines: bytes in, lines out (no files, no clock). It
/// knows where it is in the file: each line comes with the offset just past its newline (what a
/// checkpoint records once the line is delivered), and the last line, until its newline is read, is
/// kept (`partial`, from `lineStart`). A line is at most `maxLineBytes`: a longer one is cut there and
/// marked truncated, and the rest of it, up to its newline, is skipped. One trailing CR is dropped
/// from every line (CRLF files), after the cut. Empty lines are lines too (the tailer skips them).
/// (Not `ExecProcess.LineSplitter`, which drops a long line whole and counts lines instead.)
struct LineSplitter {
    /// A line, and where it ends in the file.
    struct Line {
        /// Its bytes: at most `maxLineBytes`, without its newline, nor a CR before it. Valid only
        /// during the call the line is given to (they are in the read buffer or in `partial`).
        var bytes: UnsafeBufferPointer<UInt8>
        /// It was longer than `maxLineBytes` (cut there).
        var truncated: Bool
        /// The offset just past it: past its newline, or, for a partial line taken as it is, the end
        /// of what was fed.
        var end: Int64
    }

    let maxLineBytes: Int
    /// The offset just past the bytes fed so far: the next byte to read.
    private(set) var offset: Int64
    /// Where the line being assembled (`partial`) starts.
    private(set) var lineStart: Int64
    /// The bytes of the last line fed so far, without its newline (at most `maxLineBytes`).
    private(set) var partial: [UInt8] = []
    /// The last line fed so far is longer than `partial` holds.
    private(set) var partialTruncated = false

    /// Starts at `offset` of the file, at the start of a line.
    init(maxLineBytes: Int, offset: Int64) {
        self.maxLineBytes = maxLineBytes
        self.offset = offset
        self.lineStart = offset
    }

    /// Whether a line without its newline yet is held.
    var hasPartial: Bool { !partial.isEmpty }

    /// Takes the next bytes of the file (from `offset`): calls `line` for each line they complete, in
    /// order, and keeps the rest. `line` must not use this splitter.
    mutating func feed(_ bytes: UnsafeBufferPointer<UInt8>, _ line: (Line) -> Void) {
        let base = offset
        let count = bytes.count
        guard count > 0, let address = bytes.baseAddress else { return }
        var start = 0
        while start < count {
            guard let nl = memchr(address + start, 10, count - start) else {
                appendPartial(bytes[start..<count])
                break
            }
            let end = address.distance(to: nl.assumingMemoryBound(to: UInt8.self))
            let lineEnd = base + Int64(end) + 1
            if partial.isEmpty {
                let length = end - start
                let cut = min(length, maxLineBytes)
                // In place in the caller's bytes: no copy per line.
                line(Self.line(UnsafeBufferPointer(rebasing: bytes[start..<(start + cut)]), truncated: length > maxLineBytes, end: lineEnd))
            } else {
                appendPartial(bytes[start..<end])
                let truncated = partialTruncated
                partial.withUnsafeBufferPointer { line(Self.line($0, truncated: truncated, end: lineEnd)) }
                partial.removeAll(keepingCapacity: partial.capacity <= 4096)
                partialTruncated = false
            }
            lineStart = lineEnd
            start = end + 1
        }
        offset = base + Int64(count)
    }

    /// `feed` on an array's bytes.
    mutating func feed(_ bytes: [UInt8], _ line: (Line) -> Void) {
        bytes.withUnsafeBufferPointer { feed($0, line) }
    }

    /// The line without its newline taken as it is (its file does not grow, or has not for
    /// `partial_timeout`), ending at `offset`, given to `line`; what is fed next starts a new line.
    /// False (and `line` not called) when none is held.
    @discardableResult
    mutating func takePartial(_ line: (Line) -> Void) -> Bool {
        guard !partial.isEmpty else { return false }
        let held = partial
        let truncated = partialTruncated
        partial = []
        partialTruncated = false
        lineStart = offset
        held.withUnsafeBufferPointer { line(Self.line($0, truncated: truncated, end: offset)) }
        return true
    }

    /// Forgets the line held and starts again at `offset`, at the start of a line (the file was
    /// truncated or rewritten).
    mutating func restart(at offset: Int64) {
        partial = []
        partialTruncated = false
        self.offset = offset
        lineStart = offset
    }

    private mutating func appendPartial(_ bytes: Slice<UnsafeBufferPointer<UInt8>>) {
        let room = maxLineBytes - partial.count
        if bytes.count > room {
            partial.append(contentsOf: bytes.prefix(max(0, room)))
            partialTruncated = true
        } else {
            partial.append(contentsOf: bytes)
        }
    }

    /// A line of `bytes` (already cut), without the CR that ends it in a CRLF file.
    private static func line(_ bytes: UnsafeBufferPointer<UInt8>, truncated: Bool, end: Int64) -> Line {
        var bytes = bytes
        if bytes.last == 13 { bytes = UnsafeBufferPointer(rebasing: bytes.dropLast()) }
        return Line(bytes: bytes, truncated: truncated, end: end)
    }
}

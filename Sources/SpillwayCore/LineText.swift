/// Room for the text of many tailed lines, filled by one tail thread and read, once the lines are
/// handed on, by the writer: a line's message is a place in one of these, not a String of its own
/// (no allocation, copy into a String and free per line; a chunk is freed with its last line).
/// Written only past the bytes of lines already handed on, and read only where lines were written,
/// so its filler and its readers never touch the same bytes.
public final class LineChunk: @unchecked Sendable {
    let base: UnsafeMutablePointer<UInt8>
    let capacity: Int

    /// A chunk holds this much; a line over a quarter of it gets a chunk of its own size.
    public static let defaultCapacity = 64 << 10

    init(capacity: Int) {
        self.capacity = max(1, capacity)
        base = UnsafeMutablePointer<UInt8>.allocate(capacity: self.capacity)
    }

    deinit { base.deallocate() }
}

/// A tailed line's message: its UTF-8 bytes in a `LineChunk`.
public struct LineText: Sendable {
    public let chunk: LineChunk
    let start: Int32
    public let count: Int32

    public init(chunk: LineChunk, start: Int, count: Int) {
        precondition(start >= 0 && count >= 0 && start + count <= chunk.capacity, "LineText outside its chunk")
        self.chunk = chunk
        self.start = Int32(start)
        self.count = Int32(count)
    }

    /// The bytes, valid while this value (which keeps its chunk) lives.
    @inline(__always)
    public var bytes: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: chunk.base + Int(start), count: Int(count))
    }

    public var string: String { String(decoding: bytes, as: UTF8.self) }
}

/// Appends lines' text to chunks of `capacity` bytes, a new chunk when the current one is full (the
/// first at the first line). A line longer than a quarter of that gets a chunk of its own, freed with
/// it: so a chunk is at least three quarters full when the next one starts, and the memory lines
/// hold is at most 4/3 of their bytes (with the current chunk's room, and the part of the oldest
/// chunk whose lines are gone).
public struct LineChunkWriter {
    private var chunk: LineChunk?
    private var used = 0
    let capacity: Int

    public init(capacity: Int = LineChunk.defaultCapacity) {
        self.capacity = capacity
    }

    /// Copies `bytes` (UTF-8) into a chunk.
    public mutating func append(_ bytes: UnsafeRawBufferPointer) -> LineText {
        let n = bytes.count
        if n > capacity / 4 {
            let own = LineChunk(capacity: n)
            if n > 0, let source = bytes.baseAddress {
                own.base.initialize(from: source.assumingMemoryBound(to: UInt8.self), count: n)
            }
            return LineText(chunk: own, start: 0, count: n)
        }
        if chunk == nil || used + n > chunk.unsafelyUnwrapped.capacity {
            chunk = LineChunk(capacity: capacity)
            used = 0
        }
        let target = chunk.unsafelyUnwrapped
        if n > 0, let source = bytes.baseAddress {
            // Bytes no line has had yet: initialized here, once.
            (target.base + used).initialize(from: source.assumingMemoryBound(to: UInt8.self), count: n)
        }
        let text = LineText(chunk: target, start: used, count: n)
        used += n
        return text
    }

    /// The chunk lines are being added to (tests).
    var current: LineChunk? { chunk }

    /// Copies a line's bytes into a chunk as text: as they are when they are UTF-8, else repaired
    /// as a String would keep them (each ill-formed sequence becomes U+FFFD).
    public mutating func append(text bytes: UnsafeBufferPointer<UInt8>) -> LineText {
        let raw = UnsafeRawBufferPointer(bytes)
        if isValidUTF8(raw) { return append(raw) }
        var repaired = String(decoding: bytes, as: UTF8.self)
        return repaired.withUTF8 { append(UnsafeRawBufferPointer($0)) }
    }
}

/// Whether `bytes` are well-formed UTF-8 (as Swift's String would keep them unchanged): ASCII is
/// checked 8 bytes at a time; anything else through the standard library's own validation.
public func isValidUTF8(_ bytes: UnsafeRawBufferPointer) -> Bool {
    let n = bytes.count
    guard n > 0, let base = bytes.baseAddress else { return true }
    var i = 0
    while i + 8 <= n {
        if base.loadUnaligned(fromByteOffset: i, as: UInt64.self) & 0x8080_8080_8080_8080 != 0 { break }
        i += 8
    }
    while i < n, base.load(fromByteOffset: i, as: UInt8.self) < 0x80 { i += 1 }
    if i == n { return true }
    return String(validating: UnsafeRawBufferPointer(rebasing: bytes[i...]).bindMemory(to: UInt8.self), as: UTF8.self) != nil
}

import SpillwayCore
#if canImport(Glibc)
import Glibc
#endif

/// One Redis command as RESP: its arguments as bulk strings back to back (`$<length>\r\n<bytes>\r\n`
/// each), without the array header (`*<argc>\r\n`, written when it goes into a batch or on the wire,
/// once the count is known). Binary-safe; one allocation per command instead of one per argument.
public struct RedisCommand: Sendable, Hashable {
    /// The arguments, each a RESP bulk string.
    public private(set) var bytes: [UInt8] = []
    public private(set) var argc = 0

    public init() {}

    public init(_ args: [String]) {
        for a in args { append(a) }
    }

    /// Empties it, keeping its storage.
    public mutating func removeAll(keepingCapacity: Bool = true) {
        bytes.removeAll(keepingCapacity: keepingCapacity)
        argc = 0
    }

    public mutating func append(_ s: String) {
        write(maxBytes: s.utf8.count, maxArguments: 1) { $0.argument(s) }
    }

    public mutating func append(_ s: StaticString) {
        s.withUTF8Buffer { b in write(maxBytes: b.count, maxArguments: 1) { $0.argument(UnsafeRawBufferPointer(b)) } }
    }

    public mutating func append(bytes b: some Collection<UInt8>) {
        let n = b.count
        write(maxBytes: n, maxArguments: 1) { w in
            if b.withContiguousStorageIfAvailable({ w.argument(UnsafeRawBufferPointer($0)) }) == nil {
                let copy = Array(b)
                copy.withUnsafeBytes { w.argument($0) }
            }
        }
    }

    public mutating func append(_ v: Int64) {
        write(maxBytes: ArgumentWriter.maxNumberBytes, maxArguments: 1) { $0.argument(v) }
    }

    /// A field value as text: integers and integral floats as digits written in place (no String),
    /// other floats in their shortest round-tripping form.
    public mutating func append(_ value: FieldValue) {
        write(maxBytes: ArgumentWriter.maxBytes(value), maxArguments: 1) { $0.argument(value) }
    }

    /// A float as text, as `LineProtocol.formatDouble` writes it (see `ArgumentWriter.argument(double:)`).
    public mutating func append(double d: Double) {
        write(maxBytes: ArgumentWriter.maxNumberBytes, maxArguments: 1) { $0.argument(double: d) }
    }

    /// A stream ID, `ms-seq`, written in place.
    public mutating func append(_ id: some StreamIDText) {
        write(maxBytes: 2 * ArgumentWriter.maxNumberBytes + 1, maxArguments: 1) { $0.argument(id) }
    }

    /// Appends arguments written through pointers, with no check per byte: `body` writes at most
    /// `maxBytes` bytes of contents in at most `maxArguments` arguments (room for them and their RESP
    /// framing is made first, once).
    public mutating func write(maxBytes: Int, maxArguments: Int, _ body: (inout ArgumentWriter) -> Void) {
        let b0 = bytes.count
        let room = maxBytes + ArgumentWriter.overhead(arguments: maxArguments)
        grow(&bytes, by: room)
        let (used, arguments) = bytes.withUnsafeMutableBufferPointer { b in
            var w = ArgumentWriter(bytes: b.baseAddress! + b0, room: room, maxArguments: maxArguments)
            body(&w)
            return (w.finish(), w.argumentCount)
        }
        bytes.removeLast(room - used)
        argc += arguments
    }

    /// Appends arguments already framed as RESP bulk strings (`count` of them).
    public mutating func append(framed: some Collection<UInt8>, count: Int) {
        bytes.append(contentsOf: framed)
        argc += count
    }

    /// The i-th argument's contents.
    public func argument(_ i: Int) -> ArraySlice<UInt8> {
        let r = RESP.argumentRanges(bytes[...], count: argc)
        return bytes[r[i]]
    }

    /// The arguments as strings (for logs and tests).
    public var strings: [String] {
        RESP.argumentRanges(bytes[...], count: argc).map { String(decoding: bytes[$0], as: UTF8.self) }
    }

    /// The command name (first argument), upper-cased, for logs.
    public var name: String { argc == 0 ? "" : String(decoding: argument(0), as: UTF8.self).uppercased() }
}

/// A text that is a stream ID (`ms-seq`): what an encoder writes for an explicit ID.
public protocol StreamIDText {
    var ms: UInt64 { get }
    var seq: UInt64 { get }
}

/// Zeros copied to make room (a copy is faster than appending a repeated element). Never freed, and
/// read through a pointer: no reference counting per use.
nonisolated(unsafe) private let zeros: UnsafeBufferPointer<UInt8> = {
    let p = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: 4096)
    p.initialize(repeating: 0)
    return UnsafeBufferPointer(p)
}()

/// Grows `bytes` by `n` bytes (zeros), to be written through a pointer.
@inline(__always)
func grow(_ bytes: inout [UInt8], by n: Int) {
    var left = n
    while left > 0 {
        let k = min(left, zeros.count)
        bytes.append(contentsOf: UnsafeBufferPointer(rebasing: zeros[0..<k]))
        left -= k
    }
}

/// RESP framing: headers (`*<n>\r\n`, `$<n>\r\n`), and reading back what Spillway wrote.
public enum RESP {
    /// Appends `<marker><n>\r\n`.
    @inline(__always)
    public static func appendHeader(_ out: inout [UInt8], marker: UInt8, _ n: Int) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 24) { b in
            let k = writeHeader(b.baseAddress!, marker: marker, n)
            out.append(contentsOf: UnsafeBufferPointer(start: b.baseAddress!, count: k))
        }
    }

    /// Bytes `<marker><n>\r\n` takes.
    @inline(__always)
    static func headerLength(_ n: Int) -> Int { 3 + decimalDigits(UInt64(n)) }

    @inline(__always)
    static func decimalDigits(_ v: UInt64) -> Int {
        var count = 1
        var power: UInt64 = 10
        while count < 20, v >= power {
            count += 1
            power = power &* 10
        }
        return count
    }

    /// Writes `<marker><n>\r\n` at `p`; returns its length.
    @inline(__always)
    static func writeHeader(_ p: UnsafeMutablePointer<UInt8>, marker: UInt8, _ n: Int) -> Int {
        let digits = decimalDigits(UInt64(n))
        p[0] = marker
        var v = n
        var i = digits
        while i > 0 {
            p[i] = UInt8(truncatingIfNeeded: v % 10) &+ 48
            v /= 10
            i -= 1
        }
        p[digits + 1] = 13
        p[digits + 2] = 10
        return digits + 3
    }

    /// The bulk string (`$<n>\r\n<bytes>\r\n`) at `p`: its header's length and n (trusted: written
    /// by `ArgumentWriter` or checked when read back).
    @inline(__always)
    static func bulkLengths(_ p: UnsafePointer<UInt8>) -> (header: Int, contents: Int) {
        var i = 1
        var n = 0
        while p[i] != 13 {
            n = n &* 10 &+ Int(p[i] &- 48)
            i += 1
        }
        return (i + 2, n)
    }

    /// Reads `<marker><n>\r\n` at `at` (digits only, no sign, no leading zero but "0"); returns n
    /// and where what follows starts, or nil.
    static func readHeader(_ b: ArraySlice<UInt8>, at: Int, marker: UInt8) -> (n: Int, next: Int)? {
        guard at < b.endIndex, b[at] == marker else { return nil }
        var i = at + 1
        var n = 0
        let first = i
        while i < b.endIndex, b[i] >= 48, b[i] <= 57 {
            guard i - first < 18 else { return nil }
            n = n * 10 + Int(b[i] - 48)
            i += 1
        }
        guard i > first, i + 1 < b.endIndex, b[i] == 13, b[i + 1] == 10 else { return nil }
        guard b[first] != 48 || i == first + 1 else { return nil }
        return (n, i + 2)
    }

    /// Where the contents of `count` bulk strings start and end in `b` (trusted: written by
    /// `ArgumentWriter`).
    static func argumentRanges(_ b: ArraySlice<UInt8>, count: Int) -> [Range<Int>] {
        var out: [Range<Int>] = []
        out.reserveCapacity(count)
        var at = b.startIndex
        for _ in 0..<count {
            guard let (n, next) = readHeader(b, at: at, marker: UInt8(ascii: "$")) else { break }
            out.append(next..<(next + n))
            at = next + n + 2
        }
        return out
    }
}

/// Writes arguments as RESP bulk strings into room made for them (`RedisCommand.write`,
/// `EncodedBatch.writeCommand`), through pointers: no capacity or uniqueness check per argument,
/// numbers formatted in place. An argument of a known length gets its header at once; one written
/// in parts gets room for a two-digit header first, moved once at `end` when its length needs
/// another.
public struct ArgumentWriter {
    let bytes: UnsafeMutablePointer<UInt8>
    /// Bytes it may write (contents and framing).
    let room: Int
    let maxArguments: Int
    public private(set) var byteCount = 0
    public private(set) var argumentCount = 0
    /// Where the argument being written in parts starts (its header's room), or -1.
    private var open = -1
    /// The argument whose contents' place is noted (`marked`), or -1.
    let mark: Int
    /// Where argument `mark`'s contents are, once written.
    public private(set) var marked = 0..<0

    /// The most bytes a number (Int64, UInt64 or Double) takes as text.
    public static let maxNumberBytes = 32
    /// Room a part-written argument's header gets first: `$NN\r\n`.
    static let headerRoom = 5
    /// The most framing an argument takes: `$`, 20 digits, CRLF, and the CRLF after it.
    public static func overhead(arguments: Int) -> Int { 25 * arguments }

    /// The most bytes `value` takes as text.
    public static func maxBytes(_ value: borrowing FieldValue) -> Int {
        switch value {
        case .string(let s): s.utf8.count
        default: maxNumberBytes
        }
    }

    init(bytes: UnsafeMutablePointer<UInt8>, room: Int, maxArguments: Int, mark: Int = -1) {
        self.bytes = bytes
        self.room = room
        self.maxArguments = maxArguments
        self.mark = mark
    }

    /// Ends writing: the bytes written.
    mutating func finish() -> Int {
        precondition(open < 0, "ArgumentWriter: an argument was not ended")
        return byteCount
    }

    @inline(__always)
    private mutating func openIfNeeded() {
        if open < 0 {
            precondition(byteCount + Self.headerRoom <= room, "ArgumentWriter: more bytes than the room made")
            open = byteCount
            byteCount += Self.headerRoom
        }
    }

    // MARK: parts of an argument

    /// Bytes of the current argument.
    public mutating func part(_ source: UnsafeRawBufferPointer) {
        openIfNeeded()
        precondition(byteCount + source.count + 2 <= room, "ArgumentWriter: more bytes than the room made")
        if let s = source.baseAddress, source.count > 0 {
            (bytes + byteCount).update(from: s.assumingMemoryBound(to: UInt8.self), count: source.count)
        }
        byteCount += source.count
    }

    public mutating func part(_ s: String) {
        // In place for a native string (no copy, no retain); a bridged one is made native first.
        if s.utf8.withContiguousStorageIfAvailable({ part(UnsafeRawBufferPointer($0)) }) == nil {
            var s = s
            s.withUTF8 { part(UnsafeRawBufferPointer($0)) }
        }
    }

    public mutating func part(_ s: StaticString) {
        s.withUTF8Buffer { part(UnsafeRawBufferPointer($0)) }
    }

    public mutating func part(_ b: [UInt8]) {
        b.withUnsafeBytes { part($0) }
    }

    public mutating func part(_ b: ArraySlice<UInt8>) {
        b.withUnsafeBytes { part($0) }
    }

    public mutating func part(byte: UInt8) {
        openIfNeeded()
        precondition(byteCount + 3 <= room, "ArgumentWriter: more bytes than the room made")
        bytes[byteCount] = byte
        byteCount += 1
    }

    /// Ends the current argument: its header written (the contents moved when it is not two digits
    /// long), and the CRLF after it.
    public mutating func end() {
        precondition(argumentCount < maxArguments, "ArgumentWriter: more arguments than the room made")
        if open < 0 {
            // No part: an empty argument.
            precondition(byteCount + 6 <= room, "ArgumentWriter: more bytes than the room made")
            byteCount += RESP.writeHeader(bytes + byteCount, marker: UInt8(ascii: "$"), 0)
        } else {
            let contents = open + Self.headerRoom
            let n = byteCount - contents
            let h = RESP.headerLength(n)
            if h != Self.headerRoom {
                precondition(open + h + n + 2 <= room, "ArgumentWriter: more bytes than the room made")
                memmove(bytes + open + h, bytes + contents, n)
            }
            _ = RESP.writeHeader(bytes + open, marker: UInt8(ascii: "$"), n)
            if argumentCount == mark { marked = (open + h)..<(open + h + n) }
            byteCount = open + h + n
            open = -1
        }
        bytes[byteCount] = 13
        bytes[byteCount + 1] = 10
        byteCount += 2
        argumentCount += 1
    }

    // MARK: whole arguments

    /// `count` whole arguments already framed (`$n\r\n…\r\n` each, as a command written before
    /// holds them), copied as they are. `markedContents`: where argument `mark`'s contents are in
    /// `source`, when it is one of them.
    public mutating func framed(_ source: UnsafeRawBufferPointer, count: Int, markedContents: Range<Int>? = nil) {
        precondition(open < 0, "ArgumentWriter: an argument is being written in parts")
        precondition(argumentCount + count <= maxArguments, "ArgumentWriter: more arguments than the room made")
        precondition(byteCount + source.count <= room, "ArgumentWriter: more bytes than the room made")
        if let m = markedContents, mark >= argumentCount, mark < argumentCount + count {
            marked = (byteCount + m.lowerBound)..<(byteCount + m.upperBound)
        }
        if let s = source.baseAddress, source.count > 0 {
            (bytes + byteCount).update(from: s.assumingMemoryBound(to: UInt8.self), count: source.count)
        }
        byteCount += source.count
        argumentCount += count
    }

    /// A whole argument of known contents: header, contents, CRLF, with no move.
    public mutating func argument(_ source: UnsafeRawBufferPointer) {
        precondition(open < 0, "ArgumentWriter: an argument is being written in parts")
        precondition(argumentCount < maxArguments, "ArgumentWriter: more arguments than the room made")
        let n = source.count
        precondition(byteCount + RESP.headerLength(n) + n + 2 <= room, "ArgumentWriter: more bytes than the room made")
        byteCount += RESP.writeHeader(bytes + byteCount, marker: UInt8(ascii: "$"), n)
        if argumentCount == mark { marked = byteCount..<(byteCount + n) }
        if let s = source.baseAddress, n > 0 {
            (bytes + byteCount).update(from: s.assumingMemoryBound(to: UInt8.self), count: n)
        }
        byteCount += n
        bytes[byteCount] = 13
        bytes[byteCount + 1] = 10
        byteCount += 2
        argumentCount += 1
    }

    public mutating func argument(_ s: String) {
        if s.utf8.withContiguousStorageIfAvailable({ argument(UnsafeRawBufferPointer($0)) }) == nil {
            var s = s
            s.withUTF8 { argument(UnsafeRawBufferPointer($0)) }
        }
    }

    public mutating func argument(_ s: StaticString) { s.withUTF8Buffer { argument(UnsafeRawBufferPointer($0)) } }
    public mutating func argument(_ b: [UInt8]) { b.withUnsafeBytes { argument($0) } }
    public mutating func argument(_ b: ArraySlice<UInt8>) { b.withUnsafeBytes { argument($0) } }
    public mutating func argument(_ v: Int64) { digits(v); end() }

    /// A stream ID, `ms-seq`.
    public mutating func argument(_ id: some StreamIDText) {
        digits(magnitude: id.ms)
        part(byte: UInt8(ascii: "-"))
        digits(magnitude: id.seq)
        end()
    }

    /// A field value as text: integers and integral floats as digits, other floats in their shortest
    /// round-tripping form.
    public mutating func argument(_ value: FieldValue) {
        switch value {
        case .int(let i): digits(i)
        case .uint(let u): digits(magnitude: u)
        case .double(let d): double(d)
        case .bool(let b): argument(b ? "true" : "false"); return
        case .string(let s): argument(s); return
        }
        end()
    }

    public mutating func argument(double d: Double) { double(d); end() }

    /// A float as `LineProtocol.formatDouble` writes it: integral values as digits; a value under
    /// 10^9 and at least 10^-4 with at most 6 decimals as `int.frac` (the shortest text that reads
    /// back as exactly `d`, as `description` gives); any other in its shortest round-tripping form.
    mutating func double(_ d: Double) {
        let magnitude = abs(d)
        // Conversions truncate in one instruction (no libm rounding call); false for NaN and ±inf.
        if magnitude < 1e16, Double(Int64(d)) == d {
            digits(Int64(d))
            return
        }
        if magnitude >= 1e-4, magnitude < 1e9 {
            // Under 10^15, exact in a Double, so the division is correctly rounded: when it gives
            // back `magnitude`, `scaled / 10^6` reads back as exactly `magnitude`. Near `magnitude`
            // (under 10^9, so within 10^-7 of it in steps of 10^-6) no other 6-decimal number does,
            // so with its trailing zeros cut it is the shortest such text. (Should the rounding
            // here be off by one, the check fails and the general form below is written.)
            let scaled = UInt64(magnitude * 1e6 + 0.5)
            if Double(scaled) / 1e6 == magnitude {
                if d < 0 { part(byte: UInt8(ascii: "-")) }
                digits(magnitude: scaled / 1_000_000)
                var frac = scaled % 1_000_000
                var k = 6
                while k > 1, frac % 10 == 0 {
                    frac /= 10
                    k -= 1
                }
                part(byte: UInt8(ascii: "."))
                precondition(byteCount + k + 2 <= room, "ArgumentWriter: more bytes than the room made")
                var i = byteCount + k
                while i > byteCount {
                    i -= 1
                    bytes[i] = UInt8(ascii: "0") + UInt8(frac % 10)
                    frac /= 10
                }
                byteCount += k
                return
            }
        }
        part(String(d))
    }

    mutating func digits(_ v: Int64) {
        if v < 0 { part(byte: UInt8(ascii: "-")) }
        digits(magnitude: v.magnitude)
    }

    /// "00" to "99": two digits per division when writing a number.
    private static let pairs: StaticString = "00010203040506070809101112131415161718192021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899"

    mutating func digits(magnitude: UInt64) {
        openIfNeeded()
        var count = 1
        var power: UInt64 = 10
        while count < 20, magnitude >= power {
            count += 1
            power = power &* 10
        }
        precondition(byteCount + count + 2 <= room, "ArgumentWriter: more bytes than the room made")
        let pairs = Self.pairs.utf8Start
        var v = magnitude
        var i = byteCount + count
        while v >= 100 {
            let pair = Int(v % 100) * 2
            v /= 100
            i -= 2
            bytes[i] = pairs[pair]
            bytes[i + 1] = pairs[pair + 1]
        }
        if v >= 10 {
            let pair = Int(v) * 2
            i -= 2
            bytes[i] = pairs[pair]
            bytes[i + 1] = pairs[pair + 1]
        } else {
            i -= 1
            bytes[i] = UInt8(ascii: "0") + UInt8(v)
        }
        byteCount += count
    }
}

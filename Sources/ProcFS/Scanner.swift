/// A forward-only cursor over bytes, for parsing procfs files without splitting into Strings.
struct ByteScanner {
    let bytes: [UInt8]
    var pos: Int
    /// 1-based number of the line the cursor is on.
    private(set) var line: Int = 1

    /// Where the last line starts when the bytes do not end with a newline (a read cut short: procfs
    /// files always end with one); nil when they do.
    private let cutLineStart: Int?

    init(_ bytes: [UInt8]) {
        self.bytes = bytes
        self.pos = 0
        if let last = bytes.last, last != 0x0A {
            cutLineStart = (bytes.lastIndex(of: 0x0A) ?? -1) + 1
        } else {
            cutLineStart = nil
        }
    }

    /// Whether the cursor is on a last line with no newline after it: its last value may be cut
    /// short (`MemAvailable: 9000` of `9000123 kB`), so the line is not used.
    var onCutLine: Bool {
        guard let start = cutLineStart else { return false }
        return pos >= start
    }

    var atEnd: Bool { pos >= bytes.count }
    var atEndOfLine: Bool { pos >= bytes.count || bytes[pos] == 0x0A }

    /// Skips spaces and tabs (not newlines).
    mutating func skipBlanks() {
        while pos < bytes.count, bytes[pos] == 0x20 || bytes[pos] == 0x09 { pos += 1 }
    }

    /// Moves past the next newline (or to the end).
    mutating func nextLine() {
        while pos < bytes.count, bytes[pos] != 0x0A { pos += 1 }
        if pos < bytes.count {
            pos += 1
            line += 1
        }
    }

    /// The next run of non-blank bytes on this line, or nil at the end of the line.
    mutating func token() -> ArraySlice<UInt8>? {
        skipBlanks()
        let start = pos
        while pos < bytes.count, bytes[pos] != 0x20, bytes[pos] != 0x09, bytes[pos] != 0x0A { pos += 1 }
        return pos > start ? bytes[start..<pos] : nil
    }

    /// The next token as an unsigned decimal, or nil when there is none or it is not a number.
    mutating func uint64() -> UInt64? {
        guard let t = token() else { return nil }
        return parseUInt64(t)
    }

    /// The rest of this line, without its newline; the cursor stays at the newline.
    mutating func restOfLine() -> ArraySlice<UInt8> {
        let start = pos
        while pos < bytes.count, bytes[pos] != 0x0A { pos += 1 }
        return bytes[start..<pos]
    }
}

/// An unsigned decimal from bytes; nil for an empty, non-digit or overflowing run.
@inline(__always)
func parseUInt64(_ t: ArraySlice<UInt8>) -> UInt64? {
    guard !t.isEmpty else { return nil }
    var v: UInt64 = 0
    for b in t {
        guard b >= 0x30, b <= 0x39 else { return nil }
        let (m, o1) = v.multipliedReportingOverflow(by: 10)
        let (a, o2) = m.addingReportingOverflow(UInt64(b - 0x30))
        if o1 || o2 { return nil }
        v = a
    }
    return v
}

/// A non-negative decimal with an optional fraction (`0.52`, `12345.67`) from bytes, correctly
/// rounded: the digits form an exact integer that is divided once by an exact power of ten.
func parseDecimal(_ t: ArraySlice<UInt8>) -> Double? {
    guard !t.isEmpty else { return nil }
    var mantissa: UInt64 = 0
    var fractionDigits = 0
    var seenDot = false
    var digits = 0
    for b in t {
        if b == UInt8(ascii: ".") {
            if seenDot { return nil }
            seenDot = true
            continue
        }
        guard b >= 0x30, b <= 0x39 else { return nil }
        digits += 1
        let (m, o1) = mantissa.multipliedReportingOverflow(by: 10)
        let (a, o2) = m.addingReportingOverflow(UInt64(b - 0x30))
        if o1 || o2 || a > (1 << 53) {
            // Beyond exact integers: fall back to the standard library's parser.
            return Double(String(decoding: t, as: UTF8.self))
        }
        mantissa = a
        if seenDot { fractionDigits += 1 }
    }
    guard digits > 0 else { return nil }
    guard fractionDigits > 0 else { return Double(mantissa) }
    guard fractionDigits <= 22 else { return Double(String(decoding: t, as: UTF8.self)) }
    var scale = 1.0
    for _ in 0..<fractionDigits { scale *= 10 }
    return Double(mantissa) / scale
}

@inline(__always)
func startsWith(_ t: ArraySlice<UInt8>, _ prefix: StaticString) -> Bool {
    let n = prefix.utf8CodeUnitCount
    guard t.count >= n else { return false }
    return prefix.withUTF8Buffer { p in
        var i = t.startIndex
        for b in p {
            if t[i] != b { return false }
            i += 1
        }
        return true
    }
}

@inline(__always)
func equals(_ t: ArraySlice<UInt8>, _ s: StaticString) -> Bool {
    t.count == s.utf8CodeUnitCount && startsWith(t, s)
}

func string(_ t: ArraySlice<UInt8>) -> String {
    String(decoding: t, as: UTF8.self)
}

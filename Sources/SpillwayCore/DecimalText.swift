/// A finite decimal number (`-12`, `0.5`, `1e-05`, `3.0000000000000004E-1`), as the agent writes
/// integers and floats; nil for anything else (`true`, `inf`, `nan`, `0x10`, `1.2.3`, text). What
/// `spillway aggregate` counts as a value, and what `spillway query` reads from a stream's fields.
@inlinable
public func finiteDecimal<Bytes: Collection<UInt8>>(_ text: Bytes) -> Double? {
    if let parsed = text.withContiguousStorageIfAvailable({ finiteDecimal(bytes: $0) }) { return parsed }
    return Array(text).withUnsafeBufferPointer { finiteDecimal(bytes: $0) }
}

@usableFromInline
func finiteDecimal(bytes b: UnsafeBufferPointer<UInt8>) -> Double? {
    var i = 0
    let n = b.count
    if i < n, b[i] == UInt8(ascii: "-") || b[i] == UInt8(ascii: "+") { i += 1 }
    var digits = 0
    while i < n, b[i] >= 48, b[i] <= 57 { i += 1; digits += 1 }
    if i < n, b[i] == UInt8(ascii: ".") {
        i += 1
        while i < n, b[i] >= 48, b[i] <= 57 { i += 1; digits += 1 }
    }
    guard digits > 0 else { return nil }
    if i < n, b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E") {
        i += 1
        if i < n, b[i] == UInt8(ascii: "-") || b[i] == UInt8(ascii: "+") { i += 1 }
        var e = 0
        while i < n, b[i] >= 48, b[i] <= 57 { i += 1; e += 1 }
        guard e > 0 else { return nil }
    }
    guard i == n, let d = Double(String(decoding: b, as: UTF8.self)), d.isFinite else { return nil }
    return d
}

#if canImport(Glibc)
import Glibc

/// Pins glibc's mmap threshold at 128 KiB. Batches make short-lived buffers of hundreds of KB (a
/// spilled batch's payload); by default glibc raises the threshold after the first such buffer is
/// freed, serves the next ones from the heap, and the heap fragments: RSS creeps. Pinned, they are
/// mapped and unmapped whole, and RSS stays flat. (glibc's `mallopt`, looked up at run time because
/// Swift's Glibc module does not export it; absent elsewhere, this does nothing.)
public func pinMallocMmapThreshold(bytes: Int32 = 128 * 1024) {
    typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt") else { return }
    let mallopt = unsafeBitCast(symbol, to: Mallopt.self)
    _ = mallopt(-3 /* M_MMAP_THRESHOLD */, bytes)
}
#else
public func pinMallocMmapThreshold(bytes: Int32 = 128 * 1024) {}
#endif

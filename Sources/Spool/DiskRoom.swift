#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Keeps the spill buffer's file system from filling to the last byte, where SQLite in WAL mode can
/// no longer delete, checkpoint or even read (every write, and a checkpoint that grows the database
/// file, needs room): the buffer would wedge for good, even once Redis is back.
/// - Headroom: an append is refused as "full" when, after it, less than `headroom` bytes would be
///   free on the file system, counting what the database will take when the WAL is checkpointed
///   into it (so the cap says "full" before the file system does).
/// - Reserve: `data_dir/reserve`, a file of `reserveSize` bytes allocated when the buffer opens.
///   When the file system fills anyway (another program, a log on the same disk), and a delete,
///   a state save or a checkpoint fails for want of space, the reserve is released (truncated to 0)
///   and the operation tried again: delivered batches can always be deleted, and so the backlog
///   drains. It is allocated again once there is room for it and the headroom.
final class DiskRoom: Sendable {
    let directory: String
    let reservePath: String
    /// Bytes kept free by appends.
    let headroom: Int64
    /// Size of the reserve file.
    let reserveSize: Int64
    /// Whether the reserve is allocated now. Changed under the spool's lock, read without it.
    private let held = Atomic<Bool>(false)
    var reserveHeld: Bool { held.load(ordering: .relaxed) }

    init(directory: String, headroom: Int64, reserveSize: Int64) {
        self.directory = directory
        self.reservePath = directory + "/reserve"
        self.headroom = headroom
        self.reserveSize = reserveSize
    }

    /// Bytes an unprivileged process may still write on the file system, or nil when unknown.
    func available() -> Int64? {
        var s = statvfs()
        guard statvfs(directory, &s) == 0 else { return nil }
        return Int64(s.f_bavail) * Int64(s.f_frsize)
    }

    /// Allocates the reserve when it is not held and `free` (bytes free after what the buffer
    /// already needs) leaves room for it and the headroom. Returns whether it is held.
    @discardableResult
    func ensureReserve(free: Int64?) -> Bool {
        if reserveHeld { return true }
        let have = Self.fileSize(reservePath)
        if have < reserveSize {
            guard let free, free - (reserveSize - have) >= headroom else { return false }
        }
        let fd = reservePath.withCString { open($0, O_RDWR | O_CREAT | O_CLOEXEC, 0o600) }
        guard fd >= 0 else { return false }
        defer { close(fd) }
        // Real blocks (not a sparse file): on a full disk, truncating it gives them back.
        guard posix_fallocate(fd, 0, off_t(reserveSize)) == 0 else {
            _ = ftruncate(fd, 0)
            return false
        }
        held.store(true, ordering: .relaxed)
        return true
    }

    /// Gives the reserve's blocks back to the file system. Returns whether it was held.
    func releaseReserve() -> Bool {
        guard reserveHeld else { return false }
        let fd = reservePath.withCString { open($0, O_RDWR | O_CLOEXEC) }
        if fd >= 0 {
            _ = ftruncate(fd, 0)
            close(fd)
        }
        held.store(false, ordering: .relaxed)
        return true
    }

    static func fileSize(_ path: String) -> Int64 {
        var st = stat()
        return stat(path, &st) == 0 ? Int64(st.st_size) : 0
    }
}

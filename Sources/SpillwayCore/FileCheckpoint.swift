/// A file as the tail input knows it: its device and inode. (Inode reuse is told apart by the
/// fingerprint that goes with it in a `FileCheckpoint`.)
public struct FileIdentity: Hashable, Sendable, CustomStringConvertible {
    public var device: UInt64
    public var inode: UInt64

    public init(device: UInt64, inode: UInt64) {
        self.device = device
        self.inode = inode
    }

    public var description: String { "\(device):\(inode)" }
}

/// How far a tailed file has been read: every line before `offset` is in a record that carries this
/// checkpoint or an earlier one. It travels with the last line record of each file in a batch and is
/// committed in the same transaction that makes the batch durable.
public struct FileCheckpoint: Sendable, Equatable {
    public var identity: FileIdentity
    /// FNV-1a of the file's first `fingerprintLength` bytes (at most `FileCheckpoint.fingerprintBytes`).
    public var fingerprint: UInt64
    public var fingerprintLength: Int
    /// The byte offset just after the last line delivered.
    public var offset: Int64
    /// The file's size when the line was read (for `status`'s lag).
    public var size: Int64
    /// The path the file was found at.
    public var path: String

    /// Bytes at the start of a file that identify it with its device and inode: its first KiB (all
    /// of a shorter file). Checkpoints keep the length they were taken at (256 before), and are
    /// compared at that length.
    public static let fingerprintBytes = 1024

    /// Whether this checkpoint's fingerprint is evidence enough that a file with the same first bytes
    /// holds the content it was read from: it covers every byte read (at least one line), or the
    /// first 256 bytes or more.
    public var identifiesContent: Bool {
        fingerprintLength > 0 && offset > 0 && (Int64(fingerprintLength) >= offset || fingerprintLength >= 256)
    }

    public init(identity: FileIdentity, fingerprint: UInt64, fingerprintLength: Int, offset: Int64, size: Int64, path: String) {
        self.identity = identity
        self.fingerprint = fingerprint
        self.fingerprintLength = fingerprintLength
        self.offset = offset
        self.size = size
        self.path = path
    }

    /// FNV-1a, 64 bits.
    public static func fingerprint<C: Collection>(of bytes: C) -> UInt64 where C.Element == UInt8 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes {
            h ^= UInt64(b)
            h = h &* 0x100_0000_01b3
        }
        return h
    }
}

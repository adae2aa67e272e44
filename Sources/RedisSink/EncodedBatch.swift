import SpillwayCore
import Synchronization

/// One command of a batch and what its reply settles: a copy taken out of a batch (for tests, logs and
/// error paths), or a command to put into one.
public struct EncodedCommand: Sendable {
    public enum Role: Sendable, Equatable {
        /// An XADD: the reply settles record `index` of the batch.
        case record(Int)
        /// A TS.MADD: sample j belongs to record `owners[j]`; every sample of those records is here.
        case samples(owners: [Int])
        /// TS.CREATE / TS.CREATERULE for series `key`; "already exists" counts as done.
        case setup
    }

    public var command: RedisCommand
    /// The key the command writes (for logs): one of its arguments.
    public var key: [UInt8]
    public var role: Role

    public init(command: RedisCommand, key: [UInt8], role: Role) {
        self.command = command
        self.key = key
        self.role = role
    }
}

/// Where a command's arguments are in a batch's flat storage: `argc` arguments from argument
/// `argStart`, `byteCount` bytes from byte `byteStart`.
public struct CommandSpan: Sendable {
    public var argStart: Int
    public var argc: Int
    public var byteStart: Int
    public var byteCount: Int
}

/// A batch, encoded once: every record has its key and (for streams) its ID from here on, so a
/// resend is exactly what was sent before.
///
/// Its commands are stored flat: every command's arguments back to back in one `RedisCommand`, and a
/// span per command. A batch of 1,000 records is then a few allocations, not two per record, and the
/// send stage hands hiredis pointers into it with no copy and no reference counting per command.
public struct EncodedBatch: Sendable {
    /// Every command's arguments, back to back.
    public var arguments: RedisCommand { storage.arguments }
    private var storage = ArgumentStorage()

    /// Changes `arguments` in place (copying them first when another batch shares them).
    mutating func withArguments<R, E: Error>(_ body: (inout RedisCommand) throws(E) -> R) throws(E) -> R {
        if !isKnownUniquelyReferenced(&storage) { storage = ArgumentStorage(copying: storage.arguments) }
        return try body(&storage.arguments)
    }

    struct Entry: Sendable {
        var span: CommandSpan
        /// Which of the command's arguments is its key.
        var keyArgument: Int
        var role: EncodedCommand.Role
    }

    private(set) var entries: [Entry] = []
    public var recordCount: Int
    /// Records that can never be written (timeseries: no numeric field), already settled as rejected.
    public var rejectedAtEncoding: Int
    /// Fields left out (timeseries: strings and booleans).
    public var skippedFields: Int
    /// Tailed files' checkpoints (the last of each file, in batch order): committed with the batch.
    /// Not serialized: once the batch is in the buffer they are too.
    public var checkpoints: [FileCheckpoint] = []
    /// Records that are tailed lines (a batch with lines is never dropped from the buffer).
    public var lineCount = 0

    public init(recordCount: Int = 0, rejectedAtEncoding: Int = 0, skippedFields: Int = 0) {
        self.recordCount = recordCount
        self.rejectedAtEncoding = rejectedAtEncoding
        self.skippedFields = skippedFields
    }

    /// A batch of these commands; each command's key must be one of its arguments.
    public init(commands: [EncodedCommand], recordCount: Int, rejectedAtEncoding: Int, skippedFields: Int) {
        self.init(recordCount: recordCount, rejectedAtEncoding: rejectedAtEncoding, skippedFields: skippedFields)
        for c in commands {
            guard let k = Self.keyArgument(of: c.command, key: c.key) else {
                preconditionFailure("the key of a \(c.command.name) is not one of its arguments")
            }
            append(c.command, keyArgument: k, role: c.role)
        }
    }

    /// The argument of `command` that is `key`: the first from argument 1 on, else the name.
    static func keyArgument(of command: RedisCommand, key: some Collection<UInt8>) -> Int? {
        keyArgument(lengths: command.lengths[...], bytes: command.bytes[...], key: key)
    }

    /// The same for arguments of these lengths whose bytes are `bytes`, back to back.
    static func keyArgument(lengths: ArraySlice<Int>, bytes: ArraySlice<UInt8>, key: some Collection<UInt8>) -> Int? {
        var offset = bytes.startIndex
        var found: Int?
        for (i, n) in lengths.enumerated() {
            if n == key.count, bytes[offset..<(offset + n)].elementsEqual(key) {
                if i > 0 { return i }
                found = 0
            }
            offset += n
        }
        return found
    }

    // MARK: reading

    public var commandCount: Int { entries.count }
    public func span(_ i: Int) -> CommandSpan { entries[i].span }
    public func role(_ i: Int) -> EncodedCommand.Role { entries[i].role }
    public func isRecord(_ i: Int) -> Bool {
        if case .record = entries[i].role { return true }
        return false
    }

    /// Argument `a` of command `i`.
    public func argument(_ i: Int, _ a: Int) -> ArraySlice<UInt8> {
        let s = entries[i].span
        let lengths = arguments.lengths
        var offset = s.byteStart
        for j in s.argStart..<(s.argStart + a) { offset += lengths[j] }
        return arguments.bytes[offset..<(offset + lengths[s.argStart + a])]
    }

    /// The key command `i` writes.
    public func key(_ i: Int) -> ArraySlice<UInt8> { argument(i, entries[i].keyArgument) }

    /// Command `i`'s name, upper-cased (for logs).
    public func name(_ i: Int) -> String { String(decoding: argument(i, 0), as: UTF8.self).uppercased() }

    /// A copy of command `i`.
    public func command(_ i: Int) -> EncodedCommand {
        var c = RedisCommand()
        c.append(arguments: arguments, entries[i].span)
        return EncodedCommand(command: c, key: Array(key(i)), role: entries[i].role)
    }

    /// Copies of every command (tests, logs).
    public var commands: [EncodedCommand] { (0..<entries.count).map(command) }

    // MARK: building

    /// Room for this many more bytes, arguments and commands (one growth for a batch of a known size).
    mutating func reserve(bytes: Int, arguments args: Int, commands: Int) {
        withArguments { $0.reserve(bytes: $0.bytes.count + bytes, arguments: $0.argc + args) }
        entries.reserveCapacity(entries.count + commands)
    }

    /// Starts a command: the arguments appended to `arguments` from here until `endCommand` are its.
    func beginCommand() -> CommandSpan {
        CommandSpan(argStart: arguments.argc, argc: 0, byteStart: arguments.bytes.count, byteCount: 0)
    }

    mutating func endCommand(_ start: CommandSpan, keyArgument: Int, role: EncodedCommand.Role) {
        var span = start
        span.argc = arguments.argc - start.argStart
        span.byteCount = arguments.bytes.count - start.byteStart
        entries.append(Entry(span: span, keyArgument: keyArgument, role: role))
    }

    /// Appends a whole command.
    public mutating func append(_ command: RedisCommand, keyArgument: Int, role: EncodedCommand.Role) {
        let start = beginCommand()
        withArguments { $0.append(arguments: command, command.span) }
        endCommand(start, keyArgument: keyArgument, role: role)
    }

    /// Which argument of an XADD is its entry ID (after `MAXLEN ~ n` or `MINID ~ id` when present);
    /// nil for other commands.
    func streamIDArgument(_ i: Int) -> Int? {
        let span = entries[i].span
        guard span.argc >= 3, argument(i, 0).elementsEqual("XADD".utf8) else { return nil }
        let third = argument(i, 2)
        let trimmed = third.elementsEqual("MAXLEN".utf8) || third.elementsEqual("MINID".utf8)
        let at = trimmed ? 5 : 2
        return at < span.argc ? at : nil
    }

    /// `moved` (XADDs Redis refused, see `PendingBatch.moved`) as one batch, each XADD with a new ID
    /// from `minter` (so, minted before the records encoded after it, it goes ahead of them). Returns
    /// it and how many commands got a new ID. Its records are pinned as lines (never dropped).
    public static func reminting(_ moved: [EncodedBatch], minter: inout StreamIDMinter) -> (batch: EncodedBatch, reminted: Int) {
        var out = EncodedBatch()
        var n = 0
        var reminted = 0
        for m in moved {
            for i in 0..<m.commandCount {
                defer { n += 1 }
                guard let at = m.streamIDArgument(i), let old = StreamID(String(decoding: m.argument(i, at), as: UTF8.self)) else {
                    out.append(command: i, of: m, role: .record(n))
                    continue
                }
                let id = minter.mint(key: Array(m.argument(i, 1)), ms: old.ms)
                var c = RedisCommand()
                for a in 0..<m.span(i).argc {
                    if a == at { c.append(id) } else { c.append(bytes: m.argument(i, a)) }
                }
                out.append(c, keyArgument: m.entries[i].keyArgument, role: .record(n))
                reminted += 1
            }
        }
        out.recordCount = n
        out.lineCount = n
        return (out, reminted)
    }

    /// `first`'s commands, then this batch's (records re-indexed after `first`'s).
    public func after(_ first: EncodedBatch) -> EncodedBatch {
        guard first.commandCount > 0 else { return self }
        var out = first
        out.rejectedAtEncoding = first.rejectedAtEncoding + rejectedAtEncoding
        out.skippedFields = first.skippedFields + skippedFields
        let n = first.recordCount
        for i in 0..<commandCount {
            let role: EncodedCommand.Role = switch entries[i].role {
            case .record(let r): .record(r + n)
            case .samples(let owners): .samples(owners: owners.map { $0 + n })
            case .setup: .setup
            }
            out.append(command: i, of: self, role: role)
        }
        out.recordCount = n + recordCount
        out.checkpoints = first.checkpoints + checkpoints
        out.lineCount = first.lineCount + lineCount
        return out
    }

    /// Appends command `i` of `other`, with another role.
    mutating func append(command i: Int, of other: EncodedBatch, role: EncodedCommand.Role) {
        let start = beginCommand()
        withArguments { $0.append(arguments: other.arguments, other.entries[i].span) }
        endCommand(start, keyArgument: other.entries[i].keyArgument, role: role)
    }
}

/// A batch's argument storage. Batches are hundreds of KB, above glibc's mmap threshold (pinned so RSS
/// stays flat), so fresh storage per batch would be mapped, faulted in page by page, and unmapped
/// again (with a TLB shootdown on the other core) for every batch. When the last batch holding it is
/// gone, its arrays go back to a small pool and the next batch is built in them.
final class ArgumentStorage: @unchecked Sendable {
    // Written only while uniquely referenced (`EncodedBatch.withArguments` copies it first
    // otherwise), so never while another thread may read it.
    var arguments: RedisCommand

    init() { arguments = ArgumentPool.shared.take() }
    init(copying arguments: RedisCommand) { self.arguments = arguments }
    deinit { ArgumentPool.shared.give(arguments) }
}

/// Emptied argument storage for the next batches: at most `limit` entries, each of `minBytes` to
/// `maxBytes` (so at most 16 MiB is kept; a batch of 1,000 cpu records takes about 0.8 MiB).
final class ArgumentPool: Sendable {
    static let shared = ArgumentPool()
    static let limit = 4
    static let minBytes = 64 << 10
    static let maxBytes = 4 << 20
    private let free = Mutex<[RedisCommand]>([])

    func take() -> RedisCommand {
        guard var c = free.withLock({ $0.popLast() }) else { return RedisCommand() }
        c.removeAll(keepingCapacity: true)
        return c
    }

    func give(_ c: RedisCommand) {
        let capacity = c.bytes.capacity + 8 * c.lengths.capacity
        guard capacity >= Self.minBytes, capacity <= Self.maxBytes else { return }
        free.withLock { if $0.count < Self.limit { $0.append(c) } }
    }

    var count: Int { free.withLock { $0.count } }
}


/// Everything an input needs from the outside world at one collection: the roots all reads go through,
/// and the time of this collection. Inputs never read the clock themselves, so tests are exact.
public struct InputContext: Sendable {
    /// Root of procfs (`proc_root`, default `/proc`, or host_root + `/proc`).
    public var procRoot: String
    /// Root of sysfs (`sys_root`, default `/sys`, or host_root + `/sys`).
    public var sysRoot: String
    /// The host's `/` as this process sees it (`host_root`, e.g. `/host` in a container), without a
    /// trailing slash: empty when the agent runs on the host itself. Host paths (mount points) are
    /// reached as hostRoot + path.
    public var hostRoot: String
    /// Time of this collection, nanoseconds since the epoch.
    public var now: Int64

    public init(procRoot: String, sysRoot: String, hostRoot: String = "", now: Int64) {
        self.procRoot = procRoot
        self.sysRoot = sysRoot
        self.hostRoot = hostRoot
        self.now = now
    }
}

/// What an input met at one collection besides its records. `skipped`: parts it could not use (a
/// line, a file, a mount point), each left out alone while the rest was collected; they are counted
/// in `counters.input_errors` and logged once per file and kind. `notices`: facts worth saying once
/// (a fallback taken), neither errors nor counted.
public struct InputReport: Sendable, Equatable {
    public struct Entry: Sendable, Equatable, CustomStringConvertible {
        /// The file (or host path) concerned.
        public var path: String
        public var line: Int?
        /// A few fixed words ("not a counter", "unreachable"): entries of one path and kind are
        /// logged once.
        public var kind: String
        public var message: String

        public init(path: String, line: Int? = nil, kind: String, message: String) {
            self.path = path
            self.line = line
            self.kind = kind
            self.message = message
        }

        public var description: String {
            if let line { return "\(path):\(line): \(message)" }
            return "\(path): \(message)"
        }

        /// What "once per file and kind" is keyed on.
        public var onceKey: String { "\(path)\u{0}\(kind)" }
    }

    /// The first parts left out (at most `kept`), and how many there were in all.
    public private(set) var skipped: [Entry] = []
    public private(set) var skippedCount = 0
    /// Notices, at most `kept`.
    public private(set) var notices: [Entry] = []
    public static let kept = 64

    public init() {}

    public mutating func skip(_ e: Entry, count: Int = 1) {
        skippedCount += count
        if skipped.count < Self.kept { skipped.append(e) }
    }

    /// What a collection adds to `input_errors`: once when it failed (whatever it left out on the
    /// way), else every part it left out.
    public func errors(failed: Bool) -> Int { failed ? 1 : skippedCount }

    /// More parts left out, beyond those already given as entries.
    public mutating func skipMore(_ n: Int) { skippedCount += n }

    /// Another report's entries and counts, added to this one.
    public mutating func merge(_ other: InputReport) {
        for e in other.skipped { skip(e) }
        skipMore(other.skippedCount - other.skipped.count)
        for e in other.notices { note(e) }
    }

    public mutating func note(_ e: Entry) {
        if notices.count < Self.kept { notices.append(e) }
    }

    public mutating func removeAll() {
        skipped.removeAll(keepingCapacity: true)
        skippedCount = 0
        notices.removeAll(keepingCapacity: true)
    }
}

/// A built-in input. It is a value owned by exactly one collection loop, so it may keep state between
/// collections (cpu keeps its previous sample) without locks.
public protocol Input: Sendable {
    /// Collects once and appends its records. Tags common to every record of the instance (`host`,
    /// global and per-instance tags) and `name_override` are applied by the caller.
    /// A part that cannot be used (a malformed line, one unreadable file among several) is left out
    /// and added to `report.skipped`; the rest is still collected. Throws when nothing can be
    /// collected (the one file it reads is unreadable); records appended before the throw are kept.
    mutating func gather(into records: inout [Record], report: inout InputReport, context: InputContext) throws

    /// Whether the input reports changes between collections and so emits nothing at its first one
    /// (`spillway once` then collects it twice, a short interval apart).
    var needsBaseline: Bool { get }
}

/// An input's failure at one collection: logged and counted, never fatal to the agent.
public struct InputError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

extension Input {
    public var needsBaseline: Bool { false }
}


/// Everything an input needs from the outside world at one collection: the roots all reads go through,
/// and the time of this collection. Inputs never read the clock themselves, so tests are exact.
public struct InputContext: Sendable {
    /// Root of procfs (`proc_root`, default `/proc`).
    public var procRoot: String
    /// Root of sysfs (`sys_root`, default `/sys`).
    public var sysRoot: String
    /// Time of this collection, nanoseconds since the epoch.
    public var now: Int64

    public init(procRoot: String, sysRoot: String, now: Int64) {
        self.procRoot = procRoot
        self.sysRoot = sysRoot
        self.now = now
    }
}

/// A built-in input. It is a value owned by exactly one collection loop, so it may keep state between
/// collections (cpu keeps its previous sample) without locks.
public protocol Input: Sendable {
    /// Collects once and appends its records. Tags common to every record of the instance (`host`,
    /// global and per-instance tags) and `name_override` are applied by the caller.
    /// Throws `InputError` for a malformed or unreadable source; records appended before the throw
    /// are kept.
    mutating func gather(into records: inout [Record], context: InputContext) throws

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

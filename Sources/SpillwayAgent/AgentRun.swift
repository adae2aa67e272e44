#if canImport(Glibc)
import Glibc
#endif
import SpillwayCore

/// This process's run of the agent, as saved in the agent's state: `status` tells an error of this
/// run from one an earlier run left.
public enum AgentRun {
    /// When this run started (wall clock, nanoseconds): the first time it is asked for.
    public static let startedNs: Int64 = wallClockNanoseconds()
    /// Names this run: its pid and start.
    public static let id: String = "\(getpid())-\(startedNs)"
}

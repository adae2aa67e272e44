import Foundation
import Logging
import SpillwayCore

/// Logs a repeated condition once per episode: the first failure is logged with its error, the
/// repeats are only counted, and when the condition clears one line says how many times it failed
/// and for how long. (A disk that stays full, a buffer that cannot be read: the log gets two lines,
/// not hundreds a second.) Owned by one thread.
struct Episodes {
    struct Episode {
        var count: Int
        var since: Int64
    }
    private(set) var open: [String: Episode] = [:]

    /// `condition` failed (again). Logs only the first failure of an episode.
    mutating func failed(_ condition: String, error: String, logger: Logger, level: Logger.Level = .error,
                         metadata: Logger.Metadata = [:], now: Int64 = monotonicNanoseconds()) {
        if open[condition] != nil {
            open[condition]!.count += 1
            return
        }
        open[condition] = Episode(count: 1, since: now)
        var m = metadata
        m["error"] = "\(error)"
        logger.log(level: level, "\(condition) (logged once until it works again)", metadata: m)
    }

    /// `condition` worked: ends its episode, if one is open, with one line.
    mutating func recovered(_ condition: String, logger: Logger, now: Int64 = monotonicNanoseconds()) {
        guard let e = open.removeValue(forKey: condition) else { return }
        logger.notice("\(condition): works again", metadata: [
            "episode.failures": "\(e.count)", "episode.seconds": "\(String(format: "%.1f", Double(now - e.since) / 1e9))",
        ])
    }

}

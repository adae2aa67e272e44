/// A reply from Redis. (Not `indirect`: an array's elements are in its own storage already, and
/// every other case is then stored inline, with no box allocated per reply.)
public enum RedisReply: Sendable, Equatable {
    case status(String)
    case error(String)
    case integer(Int64)
    case bulk([UInt8])
    case null
    case array([RedisReply])

    public var isError: Bool { if case .error = self { true } else { false } }

    public var string: String? {
        switch self {
        case .status(let s), .error(let s): s
        case .bulk(let b): String(decoding: b, as: UTF8.self)
        case .integer(let i): String(i)
        default: nil
        }
    }

    public var array: [RedisReply]? { if case .array(let a) = self { a } else { nil } }
}

/// What an error reply means for the record (or command) it answers.
public enum ReplyErrorKind: Sendable, Equatable {
    /// The server cannot take writes now (LOADING, BUSY, MASTERDOWN, TRYAGAIN, CLUSTERDOWN, OOM,
    /// READONLY, MISCONF, NOREPLICAS): keep the record and retry.
    case transient
    /// An explicit stream ID at or below the stream's top: the entry is already there.
    case duplicate
    /// The connection is not authenticated (NOAUTH): reconnect (which authenticates) and retry.
    case unauthenticated
    /// Anything else (WRONGTYPE, syntax, NOPERM, unknown command, …): this record can never be
    /// written; count it as rejected.
    case permanent

    public static func classify(_ message: String) -> ReplyErrorKind {
        let code = message.prefix { $0 != " " }
        switch code {
        case "LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "OOM", "READONLY", "MISCONF",
             "NOREPLICAS", "NOTREADY", "UNBLOCKED":
            return .transient
        case "NOAUTH":
            return .unauthenticated
        default:
            if message.contains("equal or smaller than the target stream top item") { return .duplicate }
            return .permanent
        }
    }
}

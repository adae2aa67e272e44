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
    /// The connection's credentials or ACL: not authenticated (NOAUTH, and the "unauthenticated"
    /// protocol errors Redis answers a large command with before AUTH), a refused password
    /// (WRONGPASS), or a command or key the user may not use (NOPERM). Nothing about the record:
    /// it waits (the breaker opens at once) and is sent again once the credentials or the ACL work.
    case credentials
    /// Anything else (WRONGTYPE, syntax, unknown command, …): this record can never be written;
    /// count it as rejected.
    case permanent

    /// Whether an attempt's error (a reply's message, or a `RedisError`'s description) is a failure
    /// of the connection's credentials or ACL.
    public static func isCredentials(_ error: String) -> Bool {
        error.hasPrefix("authentication failed") || classify(error) == .credentials
    }

    public static func classify(_ message: String) -> ReplyErrorKind {
        let code = message.prefix { $0 != " " }
        switch code {
        case "LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "OOM", "READONLY", "MISCONF",
             "NOREPLICAS", "NOTREADY", "UNBLOCKED":
            return .transient
        case "NOAUTH", "WRONGPASS", "NOPERM":
            return .credentials
        default:
            if message.contains("equal or smaller than the target stream top item") { return .duplicate }
            if message.contains("unauthenticated") { return .credentials }
            return .permanent
        }
    }
}

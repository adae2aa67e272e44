import CHiredis
import SpillwayBatch
import SpillwayCore
#if canImport(Glibc)
import Glibc
#endif

/// Why talking to Redis failed at the connection level.
public enum RedisError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Could not connect, or the connection broke (refused, reset, EOF, protocol error).
    case connection(String)
    /// No complete answer within the timeout.
    case timeout(String)
    /// AUTH or SELECT was refused. Never fall back to an unauthenticated connection.
    case authentication(String)

    public var description: String {
        switch self {
        case .connection(let m): "connection error: \(m)"
        case .timeout(let m): "timeout: \(m)"
        case .authentication(let m): "authentication failed: \(m)"
        }
    }
}

/// How much of each reply `pipeline` keeps: all of it, or only whether it is an error (writes).
public enum ReplyDetail: Sendable { case full, errorsOnly }

/// How to reach and set up a connection.
public struct RedisConnectionOptions: Sendable, Equatable {
    public var endpoint: RedisEndpoint
    /// Time allowed to connect, nanoseconds.
    public var connectTimeout: Int64 = 2_000_000_000
    /// Time allowed for a pipeline, nanoseconds: each write and each read waits at most this long,
    /// and replies still to come this long after the send fail it (once its first reply came).
    public var timeout: Int64 = 5_000_000_000
    /// TCP keepalive on the socket.
    public var keepalive: Bool = true
    /// TLS (a `rediss://` url), nil for a plain connection.
    public var tls: RedisTLSOptions?

    public init(endpoint: RedisEndpoint) { self.endpoint = endpoint }
}

/// One connection to Redis: Spillway's own socket (`RedisTransport`: TCP, unix or TLS), commands
/// written as RESP by Spillway, replies parsed by hiredis's reader. Blocking: call it from a
/// dedicated thread, never from the cooperative pool. After any connection error the socket is
/// dropped, and the next call connects afresh (timeouts, keepalive, TLS, AUTH and SELECT again).
public final class RedisConnection {
    public let options: RedisConnectionOptions
    private var transport: RedisTransport?
    /// hiredis's reply reader for this socket (a new one for each: no half reply carries over).
    private var reader: UnsafeMutablePointer<redisReader>?

    /// Where replies are read into (see `spillway_reader_create`); reset after each reply.
    private let arena: UnsafeMutablePointer<spillway_arena>
    /// What a read takes from the socket at most.
    private let input: UnsafeMutableRawBufferPointer
    /// The RESP of the commands being sent (reused).
    private var output: [UInt8] = []

    public init(options: RedisConnectionOptions) {
        self.options = options
        guard let arena = spillway_arena_create() else { fatalError("out of memory") }
        self.arena = arena
        input = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.readBytes, alignment: 16)
        RedisConnection.ignoreSIGPIPE
    }

    deinit {
        close()
        spillway_arena_destroy(arena)
        input.deallocate()
    }

    /// Writing to a socket Redis closed raises SIGPIPE, which would kill the process (TLS writes
    /// cannot pass MSG_NOSIGNAL).
    private static let ignoreSIGPIPE: Void = { signal(SIGPIPE, SIG_IGN) }()

    /// hiredis's reader buffer size; a read takes this much at most.
    static let readBytes = 16 * 1024

    public var isConnected: Bool { transport != nil }

    public func close() {
        transport = nil
        if let reader { redisReaderFree(reader) }
        reader = nil
        spillway_arena_reset(arena)
        if output.capacity > 4 * Self.writeChunkBytes { output = [] }
        generation &+= 1
        unread = 0
        lowWaterFor = 0
        lowWater = 1
    }

    /// Connects (if not connected) and authenticates. Throws `.authentication` for a refused AUTH or
    /// SELECT, `.connection`/`.timeout` otherwise.
    public func connect() throws(RedisError) {
        if transport != nil { return }
        let t = try RedisTransport.connect(options.endpoint, tls: options.tls, connectTimeout: options.connectTimeout,
                                           timeout: options.timeout, keepalive: options.keepalive)
        guard let r = spillway_reader_create(arena) else { throw .connection("cannot allocate a reply reader") }
        transport = t
        reader = r
        var setup: [RedisCommand] = []
        if let password = options.endpoint.password?.revealed {
            var auth = RedisCommand()
            auth.append("AUTH")
            if let user = options.endpoint.username { auth.append(user) }
            auth.append(password)
            setup.append(auth)
        }
        if options.endpoint.db != 0 { setup.append(RedisCommand(["SELECT", String(options.endpoint.db)])) }
        // Without a password, a PING tells before the first batch whether the server wants one
        // (a batch sent unauthenticated gets NOAUTH, or a protocol error and a closed connection).
        if options.endpoint.password == nil { setup.append(RedisCommand(["PING"])) }
        let replies = try pipelineOrThrow(setup)
        for (command, reply) in zip(setup, replies) {
            guard case .error(let message) = reply else { continue }
            if command.name == "PING" {
                // Only NOAUTH says something about credentials (LOADING and the like are for the
                // writes to find out).
                guard message.hasPrefix("NOAUTH") else { continue }
                close()
                throw .authentication("\(options.endpoint.display) requires a password and none is configured (\(message))")
            }
            close()
            let what = command.name == "AUTH" ? "AUTH" : "SELECT \(options.endpoint.db)"
            throw .authentication("\(what) refused by \(options.endpoint.display): \(message)")
        }
    }

    /// Sends every command, then reads every reply, in order. On a connection error or timeout part
    /// way, returns the replies read so far and the error: the commands past them have an unknown
    /// outcome (they may or may not have been applied).
    public func pipeline(_ commands: [RedisCommand], detail: ReplyDetail = .full) -> (replies: [RedisReply], error: RedisError?) {
        receive(send(commands), detail: detail)
    }

    /// Commands written by `send` whose replies `receive` reads: the connection they went out on,
    /// when, and whether writing them failed.
    public struct Ticket: Sendable {
        public let count: Int
        let generation: UInt64
        let start: Int64
        public let error: RedisError?
    }

    /// Counts the sockets this connection has opened: replies are read only on the one their
    /// commands went out on.
    private var generation: UInt64 = 0

    /// Sends commands `indices` of `batch` (connecting first if needed) and returns without reading
    /// their replies: several sends may be outstanding, and `receive` must then be called for each, in
    /// the order they were sent. Redis works on them meanwhile. Every command is on the socket when
    /// this returns. The batch is RESP already: a run of adjacent commands of `writeChunkBytes` or
    /// more (a whole batch, usually) goes to the socket straight from its bytes in one call; shorter
    /// runs (what is left of a batch after a partial write) are gathered first.
    public func send(_ batch: EncodedBatch, indices: [Int]) -> Ticket {
        send(count: indices.count) { t in
            batch.bytes.withUnsafeBytes { bytes -> RedisError? in
                var k = 0
                while k < indices.count {
                    // The run of adjacent commands from here.
                    let first = batch.span(indices[k])
                    var end = first.byteStart + first.byteCount
                    k += 1
                    while k < indices.count, indices[k] == indices[k - 1] + 1 {
                        let s = batch.span(indices[k])
                        guard s.byteStart == end else { break }
                        end += s.byteCount
                        k += 1
                    }
                    if let e = put(t, UnsafeRawBufferPointer(rebasing: bytes[first.byteStart..<end])) { return e }
                }
                return flush(t)
            }
        }
    }

    /// The same, for commands of their own.
    public func send(_ commands: [RedisCommand]) -> Ticket {
        send(count: commands.count) { t in
            for c in commands {
                RESP.appendHeader(&output, marker: UInt8(ascii: "*"), c.argc)
                output.append(contentsOf: c.bytes)
                if output.count >= Self.writeChunkBytes, let e = flush(t) { return e }
            }
            return flush(t)
        }
    }

    /// Puts RESP on its way: a short run is gathered in `output`, a long one written from where it
    /// is, in one call.
    private func put(_ t: RedisTransport, _ b: UnsafeRawBufferPointer) -> RedisError? {
        if b.count < Self.writeChunkBytes {
            output.append(contentsOf: b)
            return output.count >= Self.writeChunkBytes ? flush(t) : nil
        }
        if let e = flush(t) { return e }
        return write(t, b)
    }

    /// Writes what `output` gathered.
    private func flush(_ t: RedisTransport) -> RedisError? {
        guard !output.isEmpty else { return nil }
        let e = output.withUnsafeBytes { write(t, $0) }
        output.removeAll(keepingCapacity: true)
        return e
    }

    /// The common part of a send: connects, has `body` write `count` commands, keeps the ticket.
    private func send(count: Int, _ body: (RedisTransport) -> RedisError?) -> Ticket {
        // A pipeline never overtakes an earlier one that did not go out: while a send that failed
        // is not received yet, later sends fail too, without connecting. (Else a connection made
        // again for the later one, Redis back meanwhile, would write its records first, and the
        // earlier records' explicit IDs would then be below their streams' tops.)
        if failedSends > 0 {
            failedSends += 1
            return Ticket(count: count, generation: generation, start: monotonicNanoseconds(),
                          error: .connection("\(options.endpoint.display): not sent: an earlier pipeline on this connection could not be sent"))
        }
        do {
            try connect()
        } catch {
            failedSends += 1
            return Ticket(count: count, generation: generation, start: monotonicNanoseconds(), error: error)
        }
        let start = monotonicNanoseconds()
        guard let t = transport else { return Ticket(count: count, generation: generation, start: start, error: .connection("not connected")) }
        let sentOn = generation
        output.removeAll(keepingCapacity: true)
        if let failed = body(t) {
            output.removeAll(keepingCapacity: true)
            failedSends += 1
            close()
            return Ticket(count: count, generation: sentOn, start: start, error: failed)
        }
        unread += count
        return Ticket(count: count, generation: sentOn, start: start, error: nil)
    }

    /// Writes `bytes` to the socket; the error, if any.
    private func write(_ t: RedisTransport, _ bytes: UnsafeRawBufferPointer) -> RedisError? {
        do throws(RedisError) {
            try t.write(bytes)
            return nil
        } catch {
            return error
        }
    }

    /// Reads the replies to a `send`, in order. On a connection error or timeout part way, returns
    /// the replies read so far and the error: the commands past them have an unknown outcome (they
    /// may or may not have been applied). When the connection was lost since the send (by an error
    /// in another pipeline), nothing is read: every command's outcome is unknown.
    public func receive(_ ticket: Ticket, detail: ReplyDetail) -> (replies: [RedisReply], error: RedisError?) {
        if let error = ticket.error {
            failedSends = max(0, failedSends - 1)
            return ([], error)
        }
        guard let t = transport, let r = reader, generation == ticket.generation else {
            return ([], .connection("\(options.endpoint.display): the connection was lost before the replies to \(ticket.count) commands were read"))
        }
        let count = ticket.count
        var replies: [RedisReply] = []
        replies.reserveCapacity(count)
        for _ in 0..<count {
            if !t.isTLS, unread < lowWaterFor / 2 || unread >= 2 * lowWaterFor { setLowWater(t.fd) }
            var raw: UnsafeMutableRawPointer?
            while true {
                if redisReaderGetReply(r, &raw) != REDIS_OK {
                    let why = String(cString: spillway_reader_errstr(r))
                    close()
                    return (replies, .connection("\(options.endpoint.display): reading replies (\(replies.count) of \(count) read): protocol error: \(why)"))
                }
                if raw != nil { break }
                // Not a whole reply yet: read more.
                // The pipeline's time runs out only while replies are awaited: checked, once a
                // reply came, before each read (not per reply: a clock read per reply costs more
                // than parsing it; the first reply is waited for, as before, up to the socket's
                // own timeout).
                if !replies.isEmpty, monotonicNanoseconds() - ticket.start > options.timeout {
                    close()
                    return (replies, .timeout("pipeline of \(count) commands took longer than \(Units.formatDuration(options.timeout)) (\(replies.count) replies read)"))
                }
                do throws(RedisError) {
                    let n = try t.read(into: input)
                    guard redisReaderFeed(r, input.baseAddress!.assumingMemoryBound(to: CChar.self), n) == REDIS_OK else {
                        close()
                        return (replies, .connection("\(options.endpoint.display): reading replies: out of memory"))
                    }
                } catch {
                    close()
                    return (replies, Self.reading(error, replies.count, count))
                }
            }
            let reply = raw!.assumingMemoryBound(to: spillway_reply.self)
            replies.append(detail == .full ? Self.convert(reply) : Self.errorsOnly(reply))
            spillway_arena_reset(arena)
            unread -= 1
        }
        return (replies, nil)
    }

    /// A transport error while reading replies, saying how far it got.
    static func reading(_ error: RedisError, _ read: Int, _ count: Int) -> RedisError {
        switch error {
        case .timeout(let m): .timeout("\(m) (reading replies: \(read) of \(count) read)")
        case .connection(let m): .connection("\(m) (reading replies: \(read) of \(count) read)")
        case .authentication: error
        }
    }

    /// Commands sent whose replies are not read yet (on this socket).
    private var unread = 0
    /// Sends that failed (tickets with an error) not received yet: later sends fail too.
    private var failedSends = 0
    /// The socket's receive low-water mark (SO_RCVLOWAT), and the `unread` it was set for.
    private var lowWater: Int32 = 1
    private var lowWaterFor = 0

    /// Sets the socket's receive low-water mark from the replies still to come, so that a read
    /// waiting for replies sleeps until a good part of them is there, not until each of Redis's
    /// writes (a few dozen replies each): fewer wake-ups for this thread, and fewer for Redis to
    /// make. The mark never asks for more than will come: every RESP reply takes at least 3 bytes,
    /// and when hiredis reads, at most one unread reply is partly in its buffer. So the mark,
    /// 3 × (unread/2 − 1), holds while `unread` stays at least half the value it was set for; it is
    /// set again when `unread` leaves [half, double). (A mark too high would only delay a read
    /// until data, EOF, an error or the socket timeout; it cannot lose a reply.)
    private func setLowWater(_ fd: Int32) {
        lowWaterFor = unread
        let mark = Int32(max(1, min(Self.maxLowWater, 3 * (unread / 2 - 1))))
        guard mark != lowWater else { return }
        var value = mark
        if setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &value, socklen_t(MemoryLayout<Int32>.size)) == 0 {
            lowWater = mark
        }
    }

    /// The receive low-water mark set last, in bytes (1 is the socket's default).
    public var receiveLowWater: Int { Int(lowWater) }

    /// A read takes 16 KiB at most.
    static let maxLowWater = 16 * 1024

    /// One command.
    public func command(_ args: [String]) throws(RedisError) -> RedisReply {
        try pipelineOrThrow([RedisCommand(args)])[0]
    }

    private func pipelineOrThrow(_ commands: [RedisCommand]) throws(RedisError) -> [RedisReply] {
        let (replies, error) = pipeline(commands)
        if let error { throw error }
        return replies
    }

    static func convert(_ r: UnsafeMutablePointer<spillway_reply>) -> RedisReply {
        let reply = r.pointee
        switch reply.type {
        case REDIS_REPLY_STATUS:
            return .status(String(decoding: UnsafeRawBufferPointer(start: reply.str, count: reply.len), as: UTF8.self))
        case REDIS_REPLY_ERROR:
            return .error(String(decoding: UnsafeRawBufferPointer(start: reply.str, count: reply.len), as: UTF8.self))
        case REDIS_REPLY_INTEGER:
            return .integer(Int64(reply.integer))
        case REDIS_REPLY_STRING:
            return .bulk(Array(UnsafeRawBufferPointer(start: reply.str, count: reply.len)))
        case REDIS_REPLY_ARRAY:
            var elements: [RedisReply] = []
            elements.reserveCapacity(reply.elements)
            for i in 0..<reply.elements { elements.append(convert(spillway_reply_element(r, i))) }
            return .array(elements)
        default:
            return .null
        }
    }

    /// About this many bytes of commands are appended between two writes to the socket (some 50
    /// XADDs of a cpu record).
    static let writeChunkBytes = 32 * 1024

    /// Errors keep their text, arrays with an error their elements; any other reply (an array
    /// without errors too: a TS.MADD that wrote every sample) becomes `.integer(0)` (no copy).
    static func errorsOnly(_ r: UnsafeMutablePointer<spillway_reply>) -> RedisReply {
        let reply = r.pointee
        switch reply.type {
        case REDIS_REPLY_ERROR:
            return .error(String(decoding: UnsafeRawBufferPointer(start: reply.str, count: reply.len), as: UTF8.self))
        case REDIS_REPLY_ARRAY:
            guard reply.errors > 0 else { return .integer(0) }
            var elements: [RedisReply] = []
            elements.reserveCapacity(reply.elements)
            for i in 0..<reply.elements { elements.append(errorsOnly(spillway_reply_element(r, i))) }
            return .array(elements)
        default:
            return .integer(0)
        }
    }

}

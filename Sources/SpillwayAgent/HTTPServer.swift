import NIOCore
import NIOHTTP1
import NIOPosix

/// A request as the handler sees it: the method, the path, the raw query (after `?`) and, for a
/// POST of a form (`application/x-www-form-urlencoded`, on a server that takes bodies), the form.
public struct HTTPServerRequest: Sendable {
    public var method: String
    public var path: String
    public var query: Substring
    public var form: Substring = ""

    public init(method: String, path: String, query: Substring, form: Substring = "") {
        self.method = method
        self.path = path
        self.query = query
        self.form = form
    }

    /// The query's parameters, then the form's, percent-decoded (`+` is a blank), in order.
    public var parameters: [(name: String, value: String)] {
        Self.pairs(query) + Self.pairs(form)
    }

    static func pairs(_ text: Substring) -> [(name: String, value: String)] {
        text.split(separator: "&", omittingEmptySubsequences: true).map { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            return (Self.decode(parts[0]), parts.count > 1 ? Self.decode(parts[1]) : "")
        }
    }

    static func decode(_ s: Substring) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(s.utf8.count)
        var it = Array(s.utf8)[...]
        while let b = it.popFirst() {
            if b == UInt8(ascii: "+") {
                bytes.append(0x20)
            } else if b == UInt8(ascii: "%"), it.count >= 2, let hi = hex(it[it.startIndex]), let lo = hex(it[it.startIndex + 1]) {
                bytes.append(hi << 4 | lo)
                it = it.dropFirst(2)
            } else {
                bytes.append(b)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func hex(_ b: UInt8) -> UInt8? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): b - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): b - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): b - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

public struct HTTPServerResponse: Sendable {
    public var status: Int
    public var headers: [(String, String)]
    public var body: [UInt8]

    public init(status: Int, contentType: String, body: [UInt8], headers: [(String, String)] = []) {
        self.status = status
        self.headers = [("Content-Type", contentType)] + headers
        self.body = body
    }

    public static func text(_ status: Int, _ body: String, headers: [(String, String)] = []) -> HTTPServerResponse {
        HTTPServerResponse(status: status, contentType: "text/plain; charset=utf-8", body: Array(body.utf8), headers: headers)
    }
}

/// The HTTP/1.1 server of `[agent] http_listen`: SwiftNIO's HTTP/1 codec on one event-loop thread
/// (the connection registry relies on there being one), with every bound a public endpoint needs:
/// - a request head (request line and headers) of at most `maxHeadBytes`; past it, 400 and the
///   connection is closed (the codec stops reading it, so a long head costs no memory);
/// - request bodies are not kept (the endpoints take none): they are read and dropped; unless
///   `maxBodyBytes` > 0 (`spillway serve`): then POST is answered too, and a form body of at most
///   that many bytes is kept (413 past it);
/// - at most `maxConnections` open connections: one more closes the oldest connection that has no
///   request being answered (so idle or slow clients cannot lock others out);
/// - a connection that sends and takes nothing for `idleTimeout` is closed;
/// - at most `maxConcurrent` requests answered at once, and handlers running (a timed-out one runs
///   on until it returns); more get 503 at once; a request not answered
///   within `requestTimeout` gets 503 (its connection is closed after).
/// Only GET and HEAD (and POST with `maxBodyBytes`) are answered; other methods get 405. A client that shuts down its side after
/// its request (half-close) still gets the answer.
public final class HTTPServer: Sendable {
    public static let maxHeadBytes = 8 * 1024
    /// Answers a request. Runs on the server's own threads (2), never on the event loop nor on
    /// Swift's cooperative pool, so it may block (and the pool being busy never delays an answer).
    public typealias Handler = @Sendable (HTTPServerRequest) -> HTTPServerResponse
    /// The server's own answers (busy, timeout, a body refused, an internal error): status and message.
    public typealias ErrorResponse = @Sendable (Int, String) -> HTTPServerResponse

    let group: MultiThreadedEventLoopGroup
    let workers: NIOThreadPool
    let channel: any Channel
    let registry: NIOLoopBound<Connections>

    /// Binds `host:port` (a numeric IPv4 or IPv6 address) and serves until `close`.
    public init(host: String, port: Int, maxConnections: Int = 256, maxConcurrent: Int = 16,
                idleTimeout: TimeAmount = .seconds(10), requestTimeout: TimeAmount = .seconds(5),
                maxBodyBytes: Int = 0, workerThreads: Int = 2,
                errorResponse: @escaping ErrorResponse = { HTTPServerResponse.text($0, $1 + "\n") },
                handler: @escaping Handler) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let workers = NIOThreadPool(numberOfThreads: workerThreads)
        workers.start()
        let loop = group.next()
        let registry = try await loop.submit {
            NIOLoopBound(Connections(max: maxConnections, maxConcurrent: maxConcurrent, requestTimeout: requestTimeout), eventLoop: loop)
        }.get()
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 128)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    var limits = NIOHTTPDecoderLimitConfiguration()
                    limits.maxHeaderFieldSize = Self.maxHeadBytes
                    limits.maxHeaderListSize = Self.maxHeadBytes
                    limits.maxHeaderFieldCount = 100
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                        withEncoderConfiguration: .init(), withDecoderLimitConfiguration: limits)
                    let connection = Connection(registry: registry.value, workers: workers, maxBodyBytes: maxBodyBytes, errorResponse: errorResponse, handler: handler)
                    try channel.pipeline.syncOperations.addHandler(IdleStateHandler(allTimeout: idleTimeout))
                    try channel.pipeline.syncOperations.addHandler(connection)
                    registry.value.opened(connection, channel)
                    let bound = NIOLoopBound(connection, eventLoop: channel.eventLoop)
                    channel.closeFuture.whenComplete { _ in registry.value.closed(bound.value) }
                }
            }
        do {
            channel = try await bootstrap.bind(host: host, port: port).get()
        } catch {
            try? await group.shutdownGracefully()
            try? await workers.shutdownGracefully()
            throw error
        }
        self.group = group
        self.workers = workers
        self.registry = registry
    }

    /// The port bound (useful with port 0).
    public var port: Int? { channel.localAddress?.port }

    /// Stops accepting, lets the requests being answered finish (2 s at most), closes every
    /// connection and stops the event loop.
    public func close() async {
        try? await channel.close()
        let loop = channel.eventLoop
        let registry = self.registry
        for _ in 0..<200 {
            guard let answering = try? await loop.submit({ registry.value.answering }).get(), answering > 0 else { break }
            try? await Task.sleep(for: .milliseconds(10))
        }
        try? await loop.submit { registry.value.closeAll() }.get()
        try? await workers.shutdownGracefully()
        try? await group.shutdownGracefully()
    }
}

/// The open connections and the requests being answered, on the event loop only.
final class Connections {
    let max: Int
    let maxConcurrent: Int
    let requestTimeout: TimeAmount
    var open: [ObjectIdentifier: (sequence: Int, channel: any Channel, connection: Connection)] = [:]
    var sequence = 0
    var answering = 0
    /// Handlers running on the worker threads (a timed-out request's handler until it returns).
    var running = 0

    init(max: Int, maxConcurrent: Int, requestTimeout: TimeAmount) {
        self.max = max
        self.maxConcurrent = maxConcurrent
        self.requestTimeout = requestTimeout
    }

    func closeAll() {
        for entry in open.values { entry.channel.close(promise: nil) }
        open = [:]
    }

    func opened(_ connection: Connection, _ channel: any Channel) {
        if open.count >= max, let oldest = open.values.filter({ !$0.connection.busy }).min(by: { $0.sequence < $1.sequence }) {
            open[ObjectIdentifier(oldest.connection)] = nil
            oldest.channel.close(promise: nil)
        }
        sequence += 1
        open[ObjectIdentifier(connection)] = (sequence, channel, connection)
    }

    func closed(_ connection: Connection) {
        open[ObjectIdentifier(connection)] = nil
    }
}

/// One connection's requests, answered in order (the codec's pipelining handler holds a next
/// request until the response to the one before is written).
final class Connection: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let registry: Connections
    let workers: NIOThreadPool
    let handler: HTTPServer.Handler
    let errorResponse: HTTPServer.ErrorResponse
    let maxBodyBytes: Int
    var request: (head: HTTPRequestHead, supported: Bool)?
    /// The form being read (POST with `maxBodyBytes`); nil past the bound.
    var body: [UInt8]? = []
    var busy = false
    /// The client shut down its side: close once the answer being made is written.
    var inputClosed = false

    init(registry: Connections, workers: NIOThreadPool, maxBodyBytes: Int, errorResponse: @escaping HTTPServer.ErrorResponse,
         handler: @escaping HTTPServer.Handler) {
        self.registry = registry
        self.errorResponse = errorResponse
        self.workers = workers
        self.maxBodyBytes = maxBodyBytes
        self.handler = handler
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            request = (head, head.method == .GET || head.method == .HEAD || (maxBodyBytes > 0 && head.method == .POST))
            body = []
        case .body(let part):
            // Kept only for a POST the server takes, up to the bound; else read and dropped.
            guard maxBodyBytes > 0, request?.head.method == .POST, body != nil else { break }
            if body!.count + part.readableBytes > maxBodyBytes {
                body = nil
            } else {
                body!.append(contentsOf: part.readableBytesView)
            }
        case .end:
            guard let (head, supported) = request else { return }
            request = nil
            guard supported else {
                let allowed = maxBodyBytes > 0 ? "GET, HEAD, POST" : "GET, HEAD"
                respond(context: context, head: head, .text(405, "method not allowed: use \(maxBodyBytes > 0 ? "GET or POST" : "GET")\n", headers: [("Allow", allowed)]))
                return
            }
            var form: Substring = ""
            if head.method == .POST {
                guard let bytes = body else {
                    respond(context: context, head: head, errorResponse(413, "request body larger than \(maxBodyBytes) bytes"), close: true)
                    return
                }
                let type = head.headers.first(name: "Content-Type")?.lowercased() ?? ""
                guard bytes.isEmpty || type.hasPrefix("application/x-www-form-urlencoded") else {
                    respond(context: context, head: head, errorResponse(415, "a POST body must be application/x-www-form-urlencoded"))
                    return
                }
                form = Substring(String(decoding: bytes, as: UTF8.self))
            }
            body = []
            // Handlers still running count too (one whose request timed out keeps its thread until
            // it returns): never more than `maxConcurrent` at work.
            guard registry.answering < registry.maxConcurrent, registry.running < registry.maxConcurrent else {
                respond(context: context, head: head, errorResponse(503, "busy: too many requests at once"))
                return
            }
            registry.answering += 1
            registry.running += 1
            busy = true
            let uri = head.uri
            let cut = uri.firstIndex(of: "?")
            let request = HTTPServerRequest(method: head.method.rawValue, path: String(uri[..<(cut ?? uri.endIndex)]),
                                            query: cut.map { uri[uri.index(after: $0)...] } ?? "", form: form)
            let handler = self.handler
            let answer = workers.runIfActive(eventLoop: context.eventLoop) { handler(request) }
            let bound = NIOLoopBound((self, context, Answer()), eventLoop: context.eventLoop)
            let timeout = context.eventLoop.scheduleTask(in: registry.requestTimeout) {
                let (me, context, answer) = bound.value
                me.finish(answer, context: context, head: head, me.errorResponse(503, "timeout: the answer took too long"), close: true)
            }
            answer.whenComplete { result in
                timeout.cancel()
                let (me, context, answer) = bound.value
                me.registry.running -= 1
                me.finish(answer, context: context, head: head, (try? result.get()) ?? me.errorResponse(500, "internal error"), close: false)
            }
        }
    }

    /// Whether a request was answered (by its handler or by its timeout, whichever came first).
    final class Answer {
        var given = false
    }

    func finish(_ answer: Answer, context: ChannelHandlerContext, head: HTTPRequestHead, _ response: HTTPServerResponse, close: Bool) {
        guard !answer.given else { return }
        answer.given = true
        registry.answering -= 1
        busy = false
        respond(context: context, head: head, response, close: close)
    }

    func respond(context: ChannelHandlerContext, head: HTTPRequestHead, _ response: HTTPServerResponse, close: Bool = false) {
        guard context.channel.isActive else { return }
        var headers = HTTPHeaders(response.headers)
        headers.replaceOrAdd(name: "Content-Length", value: "\(response.body.count)")
        let keepAlive = head.isKeepAlive && response.status != 405 && !close && !inputClosed
        if !keepAlive {
            headers.replaceOrAdd(name: "Connection", value: "close")
        } else if head.version == .http1_0 {
            headers.replaceOrAdd(name: "Connection", value: "keep-alive")
        }
        let status = HTTPResponseStatus(statusCode: response.status)
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        if head.method != .HEAD, !response.body.isEmpty {
            var buffer = context.channel.allocator.buffer(capacity: response.body.count)
            buffer.writeBytes(response.body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent, !busy {
            context.close(promise: nil)
            return
        }
        if case .inputClosed? = event as? ChannelEvent {
            // Answered first when a request is being answered (or was read whole and is next).
            inputClosed = true
            if !busy, request == nil { context.close(promise: nil) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// A request the codec cannot read (a head past the bounds, bad syntax): the codec's error
    /// handler has answered 400; the connection is closed (nothing more of it is read).
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

}

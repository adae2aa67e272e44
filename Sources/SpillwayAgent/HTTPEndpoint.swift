import FlyingFox
import FlyingSocks
import Foundation
import Logging
import Prometheus
import ServiceLifecycle
import SpillwayConfig
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// `/metrics`: the agent's figures in the Prometheus text format (by swift-prometheus), every
/// name `spillway_*`.
public enum MetricsExposition {
    static let counterHelp: [String: String] = [
        "collected": "Records the inputs produced (entered the queue).",
        "written": "Records written to Redis directly.",
        "replayed": "Records written to Redis from the spill buffer.",
        "duplicates": "Records Redis already had (a replay after an unknown outcome).",
        "rejected": "Records Redis refused for good.",
        "dropped": "Records dropped (queue full, spill buffer full or too old, or no buffer at a stop).",
        "spilled": "Records put into the spill buffer.",
        "input_errors": "Failed collections plus parts of collections left out.",
    ]

    /// The exposition of `figures`: a registry built for this scrape, so that removed inputs and
    /// files disappear and every value is the agent's own count.
    public static func render(_ f: AgentFigures) -> [UInt8] {
        let r = PrometheusCollectorRegistry()
        func d(_ name: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
            MetricNameDescriptor(namespace: "spillway", metricName: name, unitName: unit, helpText: help)
        }
        for (name, value) in f.counters {
            r.makeCounter(descriptor: d(name, "total", counterHelp[name] ?? name)).increment(by: max(0, value))
        }
        r.makeGauge(descriptor: d("queue_length", "", "Records waiting in memory for the writer.")).set(f.queueLength)
        r.makeGauge(descriptor: d("backlog", "records", "Records in the spill buffer waiting for Redis.")).set(f.backlogRecords)
        r.makeGauge(descriptor: d("backlog", "bytes", "Bytes of the batches in the spill buffer.")).set(f.backlogBytes)
        r.makeGauge(descriptor: d("breaker", "state", "The circuit breaker: 0 closed, 1 half-open (probing), 2 open.")).set(f.breakerNumber)
        let errors = d("gather_errors", "total", "Errors of the input instance (failed collections plus parts left out).")
        let records = d("gather_records", "total", "Records the input instance produced.")
        let duration = d("gather_duration", "seconds", "How long the input instance's last collection (tail: its last poll) took.")
        let last = d("gather_last_timestamp", "seconds", "When the input instance's last collection began (Unix time; 0 before the first).")
        for i in f.inputs {
            let labels = [("input", i.input), ("at", i.at)]
            r.makeCounter(descriptor: errors, labels: labels).increment(by: max(0, i.errors))
            r.makeCounter(descriptor: records, labels: labels).increment(by: max(0, i.records))
            r.makeGauge(descriptor: duration, labels: labels).set(Double(i.durationNs) / 1e9)
            r.makeGauge(descriptor: last, labels: labels).set(Double(i.lastGatherNs ?? 0) / 1e9)
        }
        let lag = d("tail_lag", "bytes", "Bytes of a tailed file not read yet (as of the tail's last look at it).")
        for l in f.lags {
            r.makeGauge(descriptor: lag, labels: [("at", l.at), ("path", l.path)]).set(l.bytes)
        }
        return r.emitToBuffer()
    }
}

/// Serves `GET /health` and `GET /metrics` on `[agent] http_listen` (FlyingFox) while the
/// pipeline runs; stops at graceful shutdown (a reload starts it again with the new address).
/// Unknown paths get 404, other methods 405; at most `maxConcurrent` requests are answered at once,
/// the others get 503 at once.
public struct HTTPEndpointService: Service {
    let listen: HTTPListen
    let metrics: SelfMetrics
    let logger: Logger
    public static let maxConcurrent = 16
    /// Open connections at most (plus the kernel's listen backlog): past it, no more are accepted
    /// until some close.
    public static let maxConnections = 256
    /// A connection that neither sends nor takes a byte for this long is closed.
    public static let idleTimeout: Duration = .seconds(10)

    public init(listen: HTTPListen, metrics: SelfMetrics, logger: Logger) {
        self.listen = listen
        self.metrics = metrics
        self.logger = logger
    }

    public func run() async throws {
        let server: HTTPServer
        do {
            let handler = EndpointHandler(metrics: metrics)
            if listen.isIPv6 {
                server = HTTPServer(config: .init(address: try sockaddr_in6.inet6(ip6: listen.host, port: listen.port), timeout: 5,
                                                  pool: BoundedPool(), logger: .disabled), handler: handler)
            } else {
                server = HTTPServer(config: .init(address: try sockaddr_in.inet(ip4: listen.host, port: listen.port), timeout: 5,
                                                  pool: BoundedPool(), logger: .disabled), handler: handler)
            }
        } catch {
            logger.error("http_listen: not serving /health and /metrics", metadata: ["http_listen": "\(listen)", "error": "\(error)"])
            try? await gracefulShutdown()
            return
        }
        let log = logger
        let where_ = "\(listen)"
        let stopping = Flag()
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    try await server.run()
                } catch where !Task.isCancelled && !stopping.isSet {
                    // The agent goes on without the endpoint (e.g. the port is taken).
                    log.error("http_listen: cannot serve /health and /metrics; the agent runs on without them",
                              metadata: ["http_listen": "\(where_)", "error": "\(error)"])
                } catch {}
            }
            log.info("serving /health and /metrics", metadata: ["http_listen": "\(where_)"])
            try? await gracefulShutdown()
            stopping.set()
            await server.stop(timeout: 0.5)
            group.cancelAll()
        }
    }
}

/// FlyingFox's socket pool (epoll), with bounds FlyingFox has no setting for: a connection that
/// waits longer than `idleTimeout` to read or write is dropped (FlyingFox then closes it), and the
/// listening socket waits to accept while `maxConnections` connections are waiting.
struct BoundedPool: AsyncSocketPool {
    let inner: any AsyncSocketPool = HTTPServer.defaultPool()
    let waiting = Gate()

    func prepare() async throws { try await inner.prepare() }
    func run() async throws { try await inner.run() }

    func suspendSocket(_ socket: Socket, untilReadyFor events: Socket.Events) async throws {
        if Self.isListening(socket) {
            // Accepting again once fewer connections wait (bounded in time: a waiting one is
            // dropped after idleTimeout).
            while waiting.inFlight.load(ordering: .relaxed) >= HTTPEndpointService.maxConnections {
                try await Task.sleep(for: .milliseconds(50))
            }
            return try await inner.suspendSocket(socket, untilReadyFor: events)
        }
        waiting.inFlight.wrappingAdd(1, ordering: .relaxed)
        defer { waiting.inFlight.wrappingSubtract(1, ordering: .relaxed) }
        let inner = self.inner
        let ready = try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                try await inner.suspendSocket(socket, untilReadyFor: events)
                return true
            }
            group.addTask {
                try await Task.sleep(for: HTTPEndpointService.idleTimeout)
                return false
            }
            defer { group.cancelAll() }
            return try await group.next() ?? false
        }
        if !ready { throw SocketError.disconnected }
    }

    static func isListening(_ socket: Socket) -> Bool {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        return getsockopt(socket.file.rawValue, SOL_SOCKET, SO_ACCEPTCONN, &value, &length) == 0 && value != 0
    }
}

/// Counts the requests being answered, to bound them.
final class Gate: Sendable {
    let inFlight = Atomic<Int>(0)
}

/// Set once the service stops the server (its run then ends with an error that is no failure).
final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .relaxed) }
    func set() { value.store(true, ordering: .relaxed) }
}

struct EndpointHandler: HTTPHandler {
    let metrics: SelfMetrics
    let gate = Gate()

    func handleRequest(_ request: HTTPRequest) async throws -> HTTPResponse {
        guard request.path == "/health" || request.path == "/metrics" else {
            return text(.notFound, "not found: the paths are /health and /metrics\n")
        }
        guard request.method == .GET || request.method == .HEAD else {
            var r = text(.methodNotAllowed, "method not allowed: use GET\n")
            r.headers[HTTPHeader("Allow")] = "GET, HEAD"
            return r
        }
        let n = gate.inFlight.wrappingAdd(1, ordering: .relaxed).newValue
        defer { gate.inFlight.wrappingSubtract(1, ordering: .relaxed) }
        guard n <= HTTPEndpointService.maxConcurrent else {
            return text(.serviceUnavailable, "busy: too many requests at once\n")
        }
        let figures = metrics.figures()
        let head = request.method == .HEAD
        if request.path == "/health" {
            let (healthy, reason) = figures.health
            return text(healthy ? .ok : .serviceUnavailable, head ? "" : reason)
        }
        var headers = HTTPHeaders()
        headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
        return HTTPResponse(statusCode: .ok, headers: headers, body: head ? Data() : Data(MetricsExposition.render(figures)))
    }

    func text(_ code: HTTPStatusCode, _ body: String) -> HTTPResponse {
        var headers = HTTPHeaders()
        headers[.contentType] = "text/plain; charset=utf-8"
        return HTTPResponse(statusCode: code, headers: headers, body: Data(body.utf8))
    }
}

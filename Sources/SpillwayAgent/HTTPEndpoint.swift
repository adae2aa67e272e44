import Foundation
import Logging
import NIOCore
import Prometheus
import ServiceLifecycle
import SpillwayConfig

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

/// Serves `GET /health` and `GET /metrics` on `[agent] http_listen` (`HTTPServer`) while the
/// pipeline runs; stops at graceful shutdown (a reload starts it again with the new address).
/// Unknown paths get 404; the server's bounds are `HTTPServer`'s.
public struct HTTPEndpointService: Service {
    let listen: HTTPListen
    let metrics: SelfMetrics
    let logger: Logger

    public init(listen: HTTPListen, metrics: SelfMetrics, logger: Logger) {
        self.listen = listen
        self.metrics = metrics
        self.logger = logger
    }

    public func run() async throws {
        let metrics = self.metrics
        let server: HTTPServer
        do {
            server = try await HTTPServer(host: listen.host, port: Int(listen.port)) { request in
                Self.answer(request, figures: metrics.figures())
            }
        } catch {
            // The agent goes on without the endpoint (e.g. the port is taken).
            let why = (error as? IOError).map { String(cString: strerror($0.errnoCode)) } ?? "\(error)"
            logger.error("http_listen: cannot serve /health and /metrics; the agent runs on without them",
                         metadata: ["http.listen": "\(listen)", "error": "cannot listen on \(listen): \(why)"])
            try? await gracefulShutdown()
            return
        }
        logger.info("serving /health and /metrics", metadata: ["http.listen": "\(listen)"])
        try? await gracefulShutdown()
        await server.close()
    }

    static func answer(_ request: HTTPServerRequest, figures: @autoclosure () -> AgentFigures) -> HTTPServerResponse {
        switch request.path {
        case "/health":
            let (healthy, reason) = figures().health
            return .text(healthy ? 200 : 503, reason)
        case "/metrics":
            return HTTPServerResponse(status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8",
                                      body: MetricsExposition.render(figures()))
        default:
            return .text(404, "not found: the paths are /health and /metrics\n")
        }
    }
}

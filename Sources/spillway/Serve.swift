import ArgumentParser
import Foundation
import Logging
import Synchronization
import SpillwayAgent
import SpillwayConfig
import SpillwayPromQL
import SpillwayQuery
import UnixSignals

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Answer the Prometheus HTTP API's read endpoints over what the agent wrote (for Grafana).",
        discussion: """
            Serves GET and POST /api/v1/query, /api/v1/query_range, /api/v1/series, /api/v1/labels and \
            /api/v1/label/<name>/values with the Prometheus API's JSON, reading the Redis \
            [outputs.redis] names (streams or RedisTimeSeries). Metric names are NAME_FIELD \
            (cpu_usage_user); labels are the record's tags, host among them. The query language is a \
            subset of PromQL (README, "Query API"); anything else is a 400 naming what is not \
            supported. Runs until SIGTERM or SIGINT. Exit codes: 0 after a signal; 1 when the \
            address cannot be bound; 2 for a bad command line or configuration.
            """
    )

    @OptionGroup var config: ConfigOptions

    @Option(help: ArgumentHelp("Address to listen on: HOST:PORT, [V6]:PORT or PORT (loopback).", valueName: "address"))
    var listen = "127.0.0.1:9470"

    @Option(name: .customLong("max-series"), help: ArgumentHelp("Series one query may select (default: [query] max_series, 10000).", valueName: "n"))
    var maxSeries: Int?

    @Option(name: .customLong("max-points"), help: ArgumentHelp("Points per series one query may return (default: [query] max_points, 11000).", valueName: "n"))
    var maxPoints: Int?

    @Option(name: .customLong("max-samples"), help: ArgumentHelp("Raw samples one query may read in all.", valueName: "n"))
    var maxSamples = 2_000_000

    @Option(help: ArgumentHelp("How long a query may take before it is answered 503.", valueName: "duration"))
    var timeout = "30s"

    @OptionGroup var logging: LogOptions

    func validate() throws {
        if case .failure(let e) = HTTPListen.parse(listen) { throw ValidationError("--listen: \(e)") }
        if let maxSeries, maxSeries < 1 { throw ValidationError("--max-series must be at least 1") }
        if let maxPoints, maxPoints < 1 { throw ValidationError("--max-points must be at least 1") }
        if maxSamples < 1 { throw ValidationError("--max-samples must be at least 1") }
        guard let t = QueryTime.durationMs(timeout), t > 0 else { throw ValidationError("--timeout \"\(timeout)\" is not a duration (e.g. 30s)") }
    }

    func run() async throws {
        let c = try config.load()
        guard case .success(let address) = HTTPListen.parse(listen) else { throw ExitCode(2) }
        // Logged as the agent and the aggregate workers log ([agent] log_format).
        let logger = logging.bootstrap(format: c.agent.logFormat)
        var limits = QueryLimits()
        limits.maxSeries = maxSeries ?? c.query.maxSeries
        limits.maxPoints = maxPoints ?? c.query.maxPoints
        let layout = QueryOptions.layout(c)
        let engineLimits = limits
        let pool = EnginePool { QueryEngine(redis: c.redis, layout: layout, limits: engineLimits) }
        let api = PrometheusAPI(evaluator: Evaluator(maxSeries: limits.maxSeries, maxPoints: limits.maxPoints, maxSamples: maxSamples))
        let samples = maxSamples
        let timeoutMs = QueryTime.durationMs(timeout) ?? 30_000
        if !address.isLoopback {
            logger.warning("serve listens on a non-loopback address: the query API is answered, without authentication, to every host that can reach it",
                           metadata: ["serve.listen": "\(address)"])
        }
        let server: HTTPServer
        do {
            server = try await HTTPServer(host: address.host, port: Int(address.port), maxConcurrent: 8,
                                          requestTimeout: .milliseconds(timeoutMs), maxBodyBytes: 64 * 1024, workerThreads: 4,
                                          errorResponse: { status, message in
                                              HTTPServerResponse(status: status, contentType: "application/json",
                                                                 body: PrometheusAPI.error(status: status, message: message).body)
                                          }) { request in
                let now = Int64(Date().timeIntervalSince1970 * 1000)
                let response = pool.with { engine in
                    api.handle(path: request.path, parameters: request.parameters, now: now,
                               source: PrometheusSource(engine: engine, now: now, maxSamples: samples))
                }
                return HTTPServerResponse(status: response.status, contentType: "application/json", body: response.body)
            }
        } catch {
            FileHandle.standardError.write(Data("spillway: cannot listen on \(address): \(error)\n".utf8))
            throw ExitCode(1)
        }
        logger.info("serving the Prometheus query API", metadata: [
            "serve.listen": "\(address.isIPv6 ? "[\(address.host)]" : address.host):\(server.port ?? Int(address.port))",
            "redis.url": "\(c.redis.urlDisplay)", "redis.format": "\(c.redis.format.rawValue)",
        ])
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint)
        for await _ in signals { break }
        await server.close()
        logger.info("stopped")
    }
}

/// Engines (each with its own Redis connection, used by one request at a time), kept for the next
/// request; at most as many as requests are answered at once.
final class EnginePool: Sendable {
    private let idle = Mutex<[UnsafeEngine]>([])
    private let make: @Sendable () -> QueryEngine

    init(_ make: @escaping @Sendable () -> QueryEngine) { self.make = make }

    /// An engine is only ever used by the request that took it.
    struct UnsafeEngine: @unchecked Sendable { let engine: QueryEngine }

    func with<T>(_ body: (QueryEngine) -> T) -> T {
        let e = idle.withLock { $0.popLast() } ?? UnsafeEngine(engine: make())
        defer { idle.withLock { $0.append(e) } }
        return body(e.engine)
    }
}

import ArgumentParser
import Foundation
import Logging
import RedisSink
import SpillwayAggregate
import SpillwayConfig
import SpillwayCore
import UnixSignals

struct Aggregate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Aggregate the metrics streams into per-bucket avg, min, max, sum and count timeseries, as one worker of a consumer group.",
        discussion: """
            Reads the streams matching [aggregate] streams through the consumer group [aggregate] \
            group (any number of workers, on any hosts, share the work), and writes each closed \
            bucket's figures for every numeric field to RedisTimeSeries in the Redis of \
            [outputs.redis], as agg:{host}:{name}:{field}:{agg}:{bucket} (or [aggregate] key), \
            labelled. Exactly once in effect: a worker killed at any point and started again (or \
            another taking its entries over) leaves the same figures. SIGTERM or SIGINT stops it \
            cleanly; Redis errors are logged and retried.
            """
    )

    @OptionGroup var options: ConfigOptions

    @Option(name: .long, help: ArgumentHelp("This worker's name in the group (default: [aggregate] consumer, else [agent] hostname). Give each worker its own.", valueName: "name"))
    var consumer: String?

    @OptionGroup var logging: LogOptions

    func run() async throws {
        if let consumer, consumer.isEmpty { throw ValidationError("--consumer: the name is empty") }
        let config = try options.load()
        if !config.aggregateProblems.isEmpty { throw failWithProblems(config.aggregateProblems) }
        if let tls = config.redis.tls, let why = RedisTransport.problem(with: tls) {
            FileHandle.standardError.write(Data("spillway: TLS cannot work: \(why)\n".utf8))
            throw ExitCode(2)
        }
        let logger = logging.bootstrap(format: config.agent.logFormat)
        // The agent's warnings (no inputs, key templates) are not this command's concern.
        for w in config.warnings where w.keyPath.hasPrefix("outputs.redis") || w.keyPath.hasPrefix("aggregate") { logger.warning("\(w)") }
        let stop = StopSignal()
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint)
        let watcher = Task {
            for await signal in signals where !stop.isStopped {
                logger.info("stopping", metadata: ["agent.signal": "\(signal)"])
                stop.stop()
            }
        }
        defer { watcher.cancel() }
        let aggregate = config.aggregate
        let redis = config.redis
        let name = consumer
        // The worker blocks on its socket: a thread of its own, never the cooperative pool.
        let failure: String? = await withCheckedContinuation { continuation in
            let thread = Thread {
                let worker = AggregateWorker(config: aggregate, redis: redis, consumer: name, logger: logger, stop: stop)
                do throws(AggregateError) {
                    try worker.run()
                    continuation.resume(returning: nil)
                } catch {
                    continuation.resume(returning: error.description)
                }
            }
            thread.stackSize = 4 << 20
            thread.start()
        }
        if let failure {
            FileHandle.standardError.write(Data("spillway: \(failure)\n".utf8))
            throw ExitCode(1)
        }
    }
}

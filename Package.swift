// swift-tools-version:6.1
import PackageDescription

let strict: [SwiftSetting] = [.enableUpcomingFeature("ExistentialAny")]

let package = Package(
    name: "spillway",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "spillway", targets: ["spillway"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.2"),
        // [agent] http_listen: /health and /metrics on SwiftNIO's HTTP/1 server (the exposition by
        // swift-prometheus).
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", exact: "2.4.1"),
    ],
    targets: [
        // Pure procfs parsers (bytes in, values out) and the rooted reader. No metrics, no config.
        .target(name: "ProcFS", swiftSettings: strict),
        // Record, the Input protocol, line protocol, globs, durations and sizes.
        .target(name: "SpillwayCore", swiftSettings: strict),
        // agent.toml + plugins.d/*.toml -> typed config, every error located.
        .target(
            name: "SpillwayConfig",
            dependencies: ["SpillwayCore", "TOMLKit"],
            swiftSettings: strict
        ),
        // The built-in inputs, one folder each, and Registry.swift.
        .target(
            name: "SpillwayInputs",
            dependencies: ["ProcFS", "SpillwayCore", "SpillwayConfig", .product(name: "Subprocess", package: "swift-subprocess")],
            swiftSettings: strict
        ),
        // The batch contract: commands as RESP bytes, what each reply settles, per-key record counts,
        // tail checkpoints, and the spill buffer's serialized form. Neither Redis nor SQLite code.
        .target(name: "SpillwayBatch", dependencies: ["SpillwayCore"], swiftSettings: strict),
        // hiredis 0.14 from Debian's libhiredis-dev: its reply reader. Only RedisSink imports it.
        .systemLibrary(name: "CHiredis", path: "Sources/CHiredis", providers: [.apt(["libhiredis-dev"])]),
        // OpenSSL from Debian's libssl-dev, for TLS. Only RedisSink's transport imports it.
        .systemLibrary(name: "CSSL", path: "Sources/CSSL", providers: [.apt(["libssl-dev"])]),
        // The Redis side: Spillway's own connection (TCP, unix, TLS), pipelining, replies (hiredis's
        // reader is the only hiredis code used), errors, and the stream and timeseries encoders.
        .target(
            name: "RedisSink",
            dependencies: ["CHiredis", "CSSL", "SpillwayBatch", "SpillwayCore", "SpillwayConfig", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        // `spillway aggregate`: a consumer-group worker that reads the metrics streams and writes
        // per-bucket avg/min/max/sum/count as RedisTimeSeries samples, exactly once in effect.
        .target(
            name: "SpillwayAggregate",
            dependencies: ["RedisSink", "SpillwayBatch", "SpillwayConfig", "SpillwayCore", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        // The system libsqlite3 (Debian's libsqlite3-dev). Only Spool imports it.
        .systemLibrary(name: "CSQLite", path: "Sources/CSQLite", providers: [.apt(["libsqlite3-dev"])]),
        // The only code that touches SQLite: the spill buffer (schema and all SQL in one file).
        .target(
            name: "Spool",
            dependencies: ["CSQLite", "SpillwayBatch", "SpillwayCore", .product(name: "DequeModule", package: "swift-collections")],
            swiftSettings: strict
        ),
        // Runtime: the collection scheduler, as swift-service-lifecycle services.
        .target(
            name: "SpillwayAgent",
            dependencies: [
                "SpillwayCore", "SpillwayConfig", "SpillwayInputs", "SpillwayBatch", "RedisSink", "Spool",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strict
        ),
        // Label matchers and selectors (as PromQL has them), the PromQL subset `spillway serve` answers
        // (parser and evaluator) and the Prometheus HTTP API's JSON: pure, no I/O.
        .target(name: "SpillwayPromQL", swiftSettings: strict),
        // The read side (`spillway query`, and what `serve` will answer with): label selectors, series
        // discovery, latest values and aggregated ranges over both layouts, through RedisSink's
        // connection.
        .target(
            name: "SpillwayQuery",
            dependencies: ["RedisSink", "SpillwayBatch", "SpillwayConfig", "SpillwayCore", "SpillwayPromQL"],
            swiftSettings: strict
        ),
        // The commit and build date `make release` stamps into the binary (see BuildInfo.c).
        .target(name: "SpillwayBuildInfo"),
        .executableTarget(
            name: "spillway",
            dependencies: [
                "SpillwayBuildInfo", "SpillwayCore", "SpillwayConfig", "SpillwayInputs", "SpillwayAgent", "RedisSink", "Spool", "SpillwayQuery", "SpillwayPromQL", "SpillwayAggregate",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // `make bench`: prints our figure, the reference measured in the same run, and the ratio.
        .executableTarget(
            name: "spillway-bench",
            dependencies: ["ProcFS", "SpillwayCore", "SpillwayConfig", "SpillwayInputs", "SpillwayBatch", "RedisSink", "SpillwayAgent", "Spool", "SpillwayTestSupport",
                           "SpillwayQuery", "SpillwayPromQL", "SpillwayAggregate",
                           .product(name: "Logging", package: "swift-log"),
                           .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")],
            swiftSettings: strict
        ),
        // Helpers for tests only: a redis-server started on a free loopback port, stopped by PID.
        .target(name: "SpillwayTestSupport", swiftSettings: strict),
        .testTarget(
            name: "RedisSinkTests",
            dependencies: ["RedisSink", "SpillwayBatch", "SpillwayConfig", "SpillwayCore", "SpillwayTestSupport"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SpillwayAggregateTests",
            dependencies: ["SpillwayAggregate", "RedisSink", "SpillwayBatch", "SpillwayConfig", "SpillwayCore", "SpillwayTestSupport",
                           "SpillwayQuery", "SpillwayPromQL", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        .testTarget(name: "SpillwayBatchTests", dependencies: ["SpillwayBatch", "SpillwayCore"], swiftSettings: strict),
        .testTarget(
            name: "SpoolTests",
            dependencies: ["Spool", "SpillwayBatch", "SpillwayCore"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SpillwayAgentTests",
            dependencies: ["SpillwayAgent", "SpillwayBatch", "RedisSink", "SpillwayCore", "SpillwayConfig", "SpillwayTestSupport", "Spool",
                           .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        .testTarget(name: "SpillwayPromQLTests", dependencies: ["SpillwayPromQL"], swiftSettings: strict),
        .testTarget(name: "ProcFSTests", dependencies: ["ProcFS"], exclude: ["Fixtures"], swiftSettings: strict),
        .testTarget(name: "SpillwayCoreTests", dependencies: ["SpillwayCore"], swiftSettings: strict),
        .testTarget(
            name: "SpillwayConfigTests",
            dependencies: ["SpillwayConfig", "SpillwayInputs"],
            exclude: ["Malformed"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SpillwayInputsTests",
            dependencies: ["SpillwayInputs", "SpillwayConfig", "SpillwayCore", "ProcFS"],
            exclude: ["Fixtures"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SpillwayQueryTests",
            dependencies: ["SpillwayQuery", "SpillwayPromQL", "RedisSink", "SpillwayBatch", "SpillwayConfig", "SpillwayCore", "SpillwayTestSupport",
                           .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SpillwayCLITests",
            dependencies: ["SpillwayCore", "SpillwayTestSupport"],
            swiftSettings: strict
        ),
    ],
    swiftLanguageModes: [.v6]
)

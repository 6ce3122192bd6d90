// swift-tools-version: 6.1
import PackageDescription

/// Every target: Swift 6 language mode (strict concurrency) and nonisolated async
/// functions that run on the caller's executor, which keeps simulated jobs on the
/// simulator thread and cuts executor hops.
let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("NonisolatedNonsendingByDefault"),
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "Cistern",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "cistern", targets: ["cistern"]),
        .library(name: "CisternCore", targets: ["CisternCore"]),
        .library(name: "CisternSim", targets: ["CisternSim"]),
        // The client library: file I/O, batched I/O and the native KV API.
        .library(name: "Cistern", targets: ["Cistern"]),
        // The C library (`libCisternFFI.so`, shipped in the Python package as
        // `libcistern.so`).
        .library(name: "CisternFFI", type: .dynamic, targets: ["CisternFFI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
    ],
    targets: [
        // System libraries, linked through module maps; apt names the packages to install.
        // glibc's malloc.h (mallopt), for the servers' allocator settings.
        .systemLibrary(name: "CMalloc", path: "Sources/CMalloc"),
        .systemLibrary(
            name: "CSQLite", path: "Sources/CSQLite", pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(
            name: "CURing", path: "Sources/CURing", pkgConfig: "liburing",
            providers: [.apt(["liburing-dev"])]),
        // liburing's header compiled apart from Swift (see Sources/CURing/shim.h).
        .target(
            name: "CURingShim", dependencies: ["CURing"], path: "Sources/CURingShim",
            linkerSettings: [.linkedLibrary("uring")]),
        .systemLibrary(
            name: "CIBVerbs", path: "Sources/CIBVerbs",
            providers: [.apt(["libibverbs-dev"])]),
        // libfuse 3's low-level API, for `cistern mount`.
        .systemLibrary(
            name: "CFuse", path: "Sources/CFuse", pkgConfig: "fuse3",
            providers: [.apt(["libfuse3-dev", "fuse3"])]),
        .systemLibrary(
            name: "CLibPQ", path: "Sources/CLibPQ", pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]),

        // CRC-32C with the CPU's instruction (SSE4.2 or ARMv8 CRC), chosen at run time.
        .target(name: "CCRC32C", path: "Sources/CCRC32C"),
        // Wire encoding and checksums: used by everything.
        .target(name: "CisternWire", dependencies: ["CCRC32C"], swiftSettings: strict),
        // The seams (protocols and shared value types).
        .target(
            name: "CisternCore",
            dependencies: ["CisternWire", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict),
        // The demo replicated register: gives scenarios meaning until the real services land.
        // Routing: nodes, targets, chains, chain tables; the chain state machine and
        // chain-table builder (pure, shared by every service and the client).
        .target(name: "CisternRouting", dependencies: ["CisternCore"], swiftSettings: strict),
        // Tenants everywhere: capabilities (HMAC under the cluster key), tokens, and the
        // pure rules of who may use which paths and namespaces.
        .target(name: "CisternAuth", dependencies: ["CisternWire", .product(name: "Crypto", package: "swift-crypto")], swiftSettings: strict),
        // The cluster manager service and its client.
        .target(name: "CisternMgmtd", dependencies: ["CisternRouting", "CisternAuth", .product(name: "CoreMetrics", package: "swift-metrics")], swiftSettings: strict),
        // The storage service: chunk engine, CRAQ chains, resync.
        .target(name: "CisternStorage", dependencies: ["CisternRouting", "CisternAuth", "CisternMgmtd", .product(name: "CoreMetrics", package: "swift-metrics"), .product(name: "HeapModule", package: "swift-collections"), .product(name: "DequeModule", package: "swift-collections")], swiftSettings: strict),
        // The metadata service: namespace over the transactional KV.
        .target(name: "CisternMeta", dependencies: ["CisternRouting", "CisternAuth", "CisternMgmtd", .product(name: "CoreMetrics", package: "swift-metrics")], swiftSettings: strict),
        .target(name: "CisternDemo", dependencies: ["CisternCore"], swiftSettings: strict),
        // The KV cache index (slab of page slots, LRU, leases) served by the metadata servers.
        .target(name: "CisternKV", dependencies: ["CisternMeta", "CisternRouting", "CisternAuth", .product(name: "CoreMetrics", package: "swift-metrics")], swiftSettings: strict),
        // `import Cistern`: the client library.
        .target(name: "Cistern", dependencies: ["CisternKV", "CisternMeta", "CisternStorage", "CisternMgmtd", "CisternRouting", "CisternAuth"], swiftSettings: strict),

        // Production implementations of the seams.
        .target(
            name: "CisternNIO",
            dependencies: [
                "CisternCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict),
        .target(
            name: "CisternPOSIX",
            dependencies: ["CisternCore", .product(name: "NIOPosix", package: "swift-nio")],
            swiftSettings: strict),
        .target(name: "CisternSQLite", dependencies: ["CisternCore", "CSQLite"], swiftSettings: strict),
        .target(
            name: "CisternPostgres",
            dependencies: ["CisternCore", "CLibPQ", .product(name: "NIOPosix", package: "swift-nio")],
            swiftSettings: strict),
        .target(name: "CisternURing", dependencies: ["CisternCore", "CisternPOSIX", "CURing", "CURingShim", .product(name: "NIOPosix", package: "swift-nio")], swiftSettings: strict),
        .target(name: "CisternRDMA", dependencies: ["CisternCore", "CisternWire", "CIBVerbs", "CisternNIO", .product(name: "Logging", package: "swift-log"), .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio")], swiftSettings: strict),
        // `cistern bench disk`, `cistern bench meta` and `cistern bench kv`: raw limits beside
        // the chunk engine's, the metadata service's and a local cluster's figures. Benchmarks
        // sit above the servers (they start local clusters); no server depends on them.
        .target(
            name: "CisternBench",
            dependencies: [
                "CisternStorage", "CisternRouting", "CisternURing", "CisternPOSIX", "CisternNIO", "CURingShim",
                "CisternMeta", "CisternSQLite", "CSQLite", "CisternServer", "CisternMaster",
            ],
            swiftSettings: strict),

        // How a client finds a production cluster: the configuration files, DNS-based
        // discovery and a connected client session (used by the servers, the CLI and
        // the C library).
        .target(
            name: "CisternConnect",
            dependencies: ["Cistern", "CisternAuth", "CisternNIO", .product(name: "Yams", package: "Yams")],
            swiftSettings: strict),
        // `libcistern`: the C ABI (see include/cistern.h) that Python and inference
        // engines load; no server code, so it links only the client stack.
        .target(
            name: "CisternFFI",
            dependencies: ["CisternConnect"],
            exclude: ["include"],
            swiftSettings: strict),

        // `cistern mount`: the FUSE file system over the client (production only).
        .target(
            name: "CisternFUSE",
            dependencies: ["Cistern", "CisternCore", "CisternMeta", "CFuse"],
            swiftSettings: strict),

        // The master HTTP service (`cistern server --role master`): tenants, namespaces,
        // pages and files over HTTP (Hummingbird), a stateless gateway over the client.
        .target(
            name: "CisternMaster",
            dependencies: [
                "Cistern", "CisternAuth", "CisternKV", "CisternMeta",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict),

        // The Kubernetes operator's decisions (`cistern operator`), the objects it renders,
        // the mount-injecting webhook's patch, and the thin Kubernetes API layer over an
        // HTTP seam: pure enough for the simulator to drive.
        .target(
            name: "CisternOperator",
            dependencies: ["CisternConnect", "CisternRouting", .product(name: "Yams", package: "Yams")],
            swiftSettings: strict),
        // Their network shells: plain HTTP to the API (through kubectl proxy) and the
        // webhook's HTTPS server (Hummingbird).
        .target(
            name: "CisternOperatorHTTP",
            dependencies: [
                "CisternOperator",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strict),

        // Production server processes: configuration, discovery, metrics, lifecycle,
        // and the local cluster behind `cistern up`.
        .target(
            name: "CisternServer",
            dependencies: [
                "Cistern", "CisternAuth", "CisternConnect", "CisternKV", "CisternNIO", "CisternPOSIX", "CisternURing", "CisternSQLite", "CisternPostgres", "CisternRDMA", "CisternMaster", "CMalloc",
                .product(name: "Yams", package: "Yams"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict),

        // The deterministic simulator and the scenario runner.
        .target(
            name: "CisternSim",
            dependencies: [
                "CisternCore",
                .product(name: "Collections", package: "swift-collections"),
            ],
            path: "Simulator/CisternSim",
            swiftSettings: strict + [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]),
        .target(
            name: "CisternScenario",
            dependencies: ["CisternSim", "CisternDemo", "CisternMgmtd", "CisternStorage", "CisternMeta", "CisternKV", "Cistern", "CisternOperator", .product(name: "Yams", package: "Yams")],
            path: "Simulator/CisternScenario",
            swiftSettings: strict),

        .executableTarget(
            name: "cistern",
            dependencies: [
                "CisternScenario", "CisternNIO", "CisternPOSIX", "CisternSQLite", "CisternURing",
                "CisternRDMA", "CisternBench", "CisternServer", "CisternAuth", "CisternFUSE", "CisternOperator", "CisternOperatorHTTP",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Tools/cistern",
            swiftSettings: strict),

        // Seam conformance suites, shared by every implementation's tests.
        .target(
            name: "CisternConformance", dependencies: ["CisternCore"], path: "Tests/CisternConformance",
            swiftSettings: strict),

        .testTarget(name: "RoutingTests", dependencies: ["CisternRouting"], swiftSettings: strict),
        .testTarget(name: "StorageTests", dependencies: ["CisternStorage", "CisternRouting", "CisternSim", "CisternURing", "CisternNIO", "CisternBench"], swiftSettings: strict),
        .testTarget(name: "MetaTests", dependencies: ["CisternMeta", "Cistern", "CisternSim", "CisternSQLite", "CisternNIO", "CisternStorage", "CisternMgmtd"], swiftSettings: strict),
        .testTarget(name: "ClientTests", dependencies: ["Cistern", "CisternRouting", "CisternKV", "CisternSim", "CisternSQLite"], swiftSettings: strict),
        .testTarget(name: "MgmtdTests", dependencies: ["CisternMgmtd", "CisternSim"], swiftSettings: strict),
        .testTarget(name: "CisternWireTests", dependencies: ["CisternWire"], swiftSettings: strict),
        .testTarget(name: "CisternCoreTests", dependencies: ["CisternCore", "CisternSim"], swiftSettings: strict),
        .testTarget(
            name: "ConformanceTests",
            dependencies: [
                "CisternConformance", "CisternSim", "CisternNIO", "CisternPOSIX", "CisternSQLite", "CisternURing",
                "CisternRDMA", "CisternPostgres", .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict),
        .testTarget(name: "RDMATests", dependencies: ["CisternRDMA", "CisternCore", "CisternWire", "CisternNIO", "CisternConformance", .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
        // Real processes on loopback (needs the cistern executable, built with the tests).
        .testTarget(name: "EndToEndTests", dependencies: ["CisternServer", "Cistern", "CisternRouting", "CisternWire", "cistern", .product(name: "Yams", package: "Yams")], swiftSettings: strict),
        .testTarget(name: "FUSETests", dependencies: ["CisternFUSE", "Cistern", "CisternMeta"], swiftSettings: strict),
        .testTarget(name: "OperatorTests", dependencies: ["CisternOperator", "CisternOperatorHTTP", "CisternConnect", .product(name: "Yams", package: "Yams")], swiftSettings: strict),
        .testTarget(name: "SimulatorTests", dependencies: ["CisternSim", "CisternDemo"], swiftSettings: strict),
        .testTarget(name: "ScenarioTests", dependencies: ["CisternScenario", "Cistern", "CisternMgmtd", "CisternStorage"], swiftSettings: strict),
    ]
)

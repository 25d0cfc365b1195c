// swift-tools-version:6.2
import PackageDescription

/// cfsign: the signing tier for private CloudFront links.
///
/// Modules, bottom to top (each one job; a reader finds a behaviour from the folder name):
/// - `CCFSignOpenSSL`, `CCFSignHiredis`, `CCFSignPKCS11`: system-library shims, nothing else
///   (PKCS#11 is headers only: modules are dlopen'ed at run time).
/// - `CFSignSync`: `Locked`, the one lock type (a pthread mutex ThreadSanitizer understands).
/// - `CFSignCore`: the wire protocol without I/O (jobs, policies, URL/cookie assembly, key-group model, heartbeat).
/// - `CFSignCrypto`: private/public keys, signatures, loaded key groups (OpenSSL libcrypto; keys in
///   an HSM through PKCS#11; AWS KMS keys through a loader a module above injects).
/// - `CFSignKMS`: AWS KMS keys: SigV4, credential providers, KMS and STS over HTTPS, `KMSKey`;
///   with `CFSignEdge` (its origin client) and `CFSignOTLPHTTP`, the only modules that link AsyncHTTPClient (so the
///   worker library and the fuzz build do not).
/// - `CFSignRedis`: a small, generic, blocking Redis client over hiredis; knows nothing of cfsign.
/// - `CFSignTracing`: the worker's spans without I/O: the span record, OTLP's protobuf and JSON
///   bodies, the `OTEL_*` settings, sampling, and the bounded export queue on its own thread.
/// - `CFSignOTLPHTTP`: posts those bodies to a collector over AsyncHTTPClient (apart, so the
///   worker library links no HTTP client).
/// - `CFSignWorker`: the queue worker.
/// - `CFSignAdmin`: operator logic an app or script can link: fleet snapshots and the key-group store.
/// - `CFSignClient`: the producer library a web app links.
/// - `CFSignEdge`: `cfsign edge`, a local CloudFront stand-in that enforces signed URLs and cookies;
///   it forwards to an origin over AsyncHTTPClient (URLSession would link libcurl into every process).
/// - `cfsign`: the executable; it only wires the above together.
///
/// Linux only: the code calls Glibc directly and links the system's libcrypto and hiredis, so no
/// `platforms:` line is declared (it would only set Apple deployment targets).
let package = Package(
    name: "cfsign",
    products: [
        .executable(name: "cfsign", targets: ["cfsign"]),
        .library(name: "CFSignClient", targets: ["CFSignClient"]),
        .library(name: "CFSignCore", targets: ["CFSignCore"]),
        // For the fuzz package (Fuzz/), which drives the worker's job path through its SPI.
        .library(name: "CFSignCrypto", targets: ["CFSignCrypto"]),
        .library(name: "CFSignWorker", targets: ["CFSignWorker"]),
        .library(name: "CFSignAdmin", targets: ["CFSignAdmin"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-system.git", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-distributed-tracing.git", from: "1.7.3"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        // The worker's settings (ConfigReader over flags, CFSIGN_* variables, the key = value file
        // and defaults). No traits: the default JSON trait parses JSON files, which cfsign does not
        // read (its file format has its own small provider), and YAML would add Yams.
        .package(url: "https://github.com/apple/swift-configuration.git", from: "1.4.0", traits: []),
    ],
    targets: [
        .systemLibrary(
            name: "CCFSignOpenSSL",
            pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"])]
        ),
        .systemLibrary(
            name: "CCFSignHiredis",
            pkgConfig: "hiredis",
            providers: [.apt(["libhiredis-dev"])]
        ),
        // Only the header's include path is used (nothing calls into libp11-kit itself): the
        // PKCS#11 module named by a key's URI is dlopen'ed at run time.
        .systemLibrary(
            name: "CCFSignPKCS11",
            pkgConfig: "p11-kit-1",
            providers: [.apt(["libp11-kit-dev"])]
        ),
        .target(name: "CFSignCore"),
        .target(name: "CFSignSync"),
        // AWS KMS keys: HTTPS calls on NIO event loops, never on the signing lanes.
        .target(
            name: "CFSignKMS",
            dependencies: [
                "CFSignSync", "CFSignCore", "CFSignCrypto", "CCFSignOpenSSL",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .target(
            name: "CFSignCrypto",
            dependencies: ["CFSignSync", "CFSignCore", "CCFSignOpenSSL", "CCFSignPKCS11", .product(name: "SystemPackage", package: "swift-system")]
        ),
        .target(
            name: "CFSignRedis",
            dependencies: ["CCFSignHiredis"]
        ),
        .target(
            name: "CFSignWorker",
            dependencies: [
                "CFSignSync", "CFSignCore", "CFSignCrypto", "CFSignRedis", "CFSignTracing",
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ]
        ),
        .target(
            name: "CFSignHTTP",
            dependencies: [
                "CFSignSync",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        .target(
            name: "CFSignEdge",
            dependencies: [
                "CFSignSync", "CFSignCore", "CFSignCrypto", "CFSignHTTP", "CFSignRedis",
                // The origin's HTTP client (not URLSession: see OriginBackend).
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        .target(
            name: "CFSignTracing",
            dependencies: [
                "CFSignSync", "CFSignCore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        .target(
            name: "CFSignOTLPHTTP",
            dependencies: [
                "CFSignSync", "CFSignTracing",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .target(
            name: "CFSignAdmin",
            dependencies: ["CFSignCore", "CFSignCrypto", "CFSignRedis"]
        ),
        .target(
            name: "CFSignClient",
            dependencies: [
                "CFSignSync", "CFSignCore", "CFSignRedis",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Instrumentation", package: "swift-distributed-tracing"),
            ]
        ),
        .executableTarget(
            name: "cfsign",
            dependencies: [
                "CFSignSync",
                "CFSignCore", "CFSignCrypto", "CFSignKMS", "CFSignRedis", "CFSignWorker", "CFSignClient", "CFSignHTTP", "CFSignEdge", "CFSignAdmin", "CFSignTracing", "CFSignOTLPHTTP",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ]
        ),
        // The producer half of scripts/bench-producer: many concurrent sign calls through one client.
        .executableTarget(name: "cfsign-client-bench", dependencies: ["CFSignClient", "CFSignCore", "CFSignRedis"]),
        .testTarget(name: "CFSignCoreTests", dependencies: ["CFSignCore"]),
        .testTarget(name: "CFSignCryptoTests", dependencies: ["CFSignSync", "CFSignCore", "CFSignCrypto", "CFSignTestSupport"]),
        .testTarget(name: "CFSignWorkerTests", dependencies: ["CFSignCore", "CFSignRedis", "CFSignWorker", .product(name: "Configuration", package: "swift-configuration")]),
        .testTarget(name: "CFSignEdgeTests", dependencies: ["CFSignEdge", .product(name: "NIOCore", package: "swift-nio")]),
        .testTarget(name: "CFSignKMSTests", dependencies: ["CFSignKMS"]),
        .testTarget(name: "CFSignTracingTests", dependencies: ["CFSignTracing", "CFSignCore"]),
        // Real redis-server and cfsign worker processes for the Redis and worker tests.
        .target(
            name: "CFSignTestSupport",
            dependencies: ["CFSignSync", "CFSignRedis"],
            path: "Tests/CFSignTestSupport"
        ),
        .testTarget(
            name: "CFSignRedisTests",
            dependencies: ["CFSignRedis", "CFSignTestSupport"]
        ),
        .testTarget(
            name: "CFSignAdminTests",
            dependencies: ["CFSignAdmin", "CFSignCore", "CFSignCrypto", "CFSignRedis", "CFSignTestSupport"]
        ),
        .testTarget(
            name: "CFSignClientTests",
            dependencies: [
                "CFSignCore", "CFSignCrypto", "CFSignRedis", "CFSignWorker", "CFSignClient", "CFSignTestSupport",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Instrumentation", package: "swift-distributed-tracing"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)

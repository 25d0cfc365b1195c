// swift-tools-version:6.2
import PackageDescription

/// The worker's job path in one process, without Redis or threads: where the CPU around each
/// signature goes (BENCHMARKS.md, issue 17). Built only by hand, in release; not part of CI.
let package = Package(
    name: "cfsign-job-path",
    dependencies: [.package(name: "cfsign", path: "../..")],
    targets: [
        .executableTarget(
            name: "cfsign-job-path",
            dependencies: [
                .product(name: "CFSignCore", package: "cfsign"),
                .product(name: "CFSignCrypto", package: "cfsign"),
            ]
        ),
    ]
)

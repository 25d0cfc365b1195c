// swift-tools-version:6.2
import PackageDescription

/// libFuzzer targets for cfsign's parsers and the worker's whole job path. Built only by scripts/fuzz, with -sanitize=fuzzer
/// (and address), so the main package's build and tests are not affected.
let fuzzTargets = ["FuzzJobParser", "FuzzURLRules", "FuzzKeyGroup", "FuzzSignedRequest"]
/// The whole worker path (parse, validate, sign, reply, bookkeeping): needs the worker and crypto.
let workerPathTarget = "FuzzWorkerPath"

/// Linux only, like the package it fuzzes (no `platforms:` line).
let package = Package(
    name: "cfsign-fuzz",
    dependencies: [.package(name: "cfsign", path: "..")],
    targets: [.target(name: "FuzzSupport")] + fuzzTargets.map { name in
        .executableTarget(
            name: name,
            dependencies: ["FuzzSupport", .product(name: "CFSignCore", package: "cfsign")],
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        )
    } + [
        .executableTarget(
            name: workerPathTarget,
            dependencies: [
                "FuzzSupport",
                .product(name: "CFSignCore", package: "cfsign"),
                .product(name: "CFSignCrypto", package: "cfsign"),
                .product(name: "CFSignWorker", package: "cfsign"),
            ],
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        ),
    ],
    swiftLanguageModes: [.v6]
)

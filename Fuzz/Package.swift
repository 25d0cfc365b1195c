// swift-tools-version:6.2
import PackageDescription

/// libFuzzer targets for cfsign's parsers. Built only by scripts/fuzz, with -sanitize=fuzzer
/// (and address), so the main package's build and tests are not affected.
let fuzzTargets = ["FuzzJobParser", "FuzzURLRules", "FuzzKeyGroup", "FuzzSignedRequest"]

let package = Package(
    name: "cfsign-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "cfsign", path: "..")],
    targets: [.target(name: "FuzzSupport")] + fuzzTargets.map { name in
        .executableTarget(
            name: name,
            dependencies: ["FuzzSupport", .product(name: "CFSignCore", package: "cfsign")],
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        )
    },
    swiftLanguageModes: [.v6]
)

// swift-tools-version:6.2
import PackageDescription

/// An example web app that hands out signed links from a cfsign fleet: a small Hummingbird service
/// with `GET /invoices/:id/link`. Built and queried by Tests/examples (scripts/test), not by the
/// main package, so Hummingbird costs no build time there. Hummingbird's default traits
/// (swift-configuration support, full Foundation) are off: this app needs neither.
let package = Package(
    name: "hummingbird-links",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "cfsign", path: "../.."),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1", traits: []),
    ],
    targets: [
        .executableTarget(
            name: "InvoiceLinks",
            dependencies: [
                .product(name: "CFSignClient", package: "cfsign"),
                .product(name: "CFSignCore", package: "cfsign"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)

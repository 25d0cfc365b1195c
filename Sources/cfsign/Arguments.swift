import ArgumentParser
import CFSignCore

/// `--expires-at`, `--starts-at`, `--at`: epoch seconds or ISO 8601.
struct TimeArgument: ExpressibleByArgument, Sendable {
    let epochSeconds: Int64
    init?(argument: String) {
        guard let t = Timestamps.parse(argument) else { return nil }
        epochSeconds = t
    }
    static var defaultCompletionKind: CompletionKind { .default }
}

/// `--expires-in`, lifetimes: seconds or a number with s, m, h, d.
struct DurationArgument: ExpressibleByArgument, Sendable {
    let seconds: Int64
    init?(argument: String) {
        guard let s = Durations.parse(argument) else { return nil }
        seconds = s
    }
}

extension HashAlgorithm: ExpressibleByArgument {
    public init?(argument: String) {
        self.init(rawValue: argument.uppercased().replacingOccurrences(of: "-", with: ""))
    }
    public static var allValueStrings: [String] { allCases.map(\.rawValue) }
}

/// The link policy flags shared by `cfsign sign` and `cfsign request`.
struct PolicyOptions: ParsableArguments {
    @Argument(help: "The object's absolute http(s) URL, unsigned.")
    var url: String

    @Option(help: ArgumentHelp("When the link stops working: \(Timestamps.help).", valueName: "time"))
    var expiresAt: TimeArgument?

    @Option(help: ArgumentHelp("How long the link works from signing: \(Durations.help).", valueName: "duration"))
    var expiresIn: DurationArgument?

    @Option(help: ArgumentHelp("The link works only after this time (custom policy).", valueName: "time"))
    var startsAt: TimeArgument?

    @Option(help: ArgumentHelp("IPv4 address or CIDR range the viewer must come from (custom policy).", valueName: "cidr"))
    var ip: String?

    @Option(help: ArgumentHelp("Policy resource with * and ? wildcards, matching the URL (custom policy).", valueName: "pattern"))
    var resource: String?

    @Flag(help: "Produce the signed-cookie set instead of a signed URL.")
    var cookies = false

    @Option(help: ArgumentHelp("Digest: SHA1 (CloudFront's default) or SHA256 (adds Hash-Algorithm=SHA256).", valueName: "SHA1|SHA256"))
    var hash: HashAlgorithm?

    @Flag(help: "Print the contract's reply object (JSON) instead of the plain link.")
    var json = false

    /// The checked request, or the contract's error (same checks and messages as a worker's).
    func request(keyID: String?) throws(SigningError) -> SigningRequest {
        let expiry: Expiry
        switch (expiresAt, expiresIn) {
        case (nil, nil): throw SigningError(.invalidExpiry, "give exactly one of --expires-at or --expires-in")
        case (_?, _?): throw SigningError(.invalidExpiry, "give only one of --expires-at and --expires-in")
        case (let at?, nil): expiry = .at(at.epochSeconds)
        case (nil, let d?): expiry = .after(seconds: d.seconds)
        }
        try URLRules.validateURL(url)
        let range = try ip.map { (text) throws(SigningError) in try IPv4Range(parsing: text) }
        return try SigningRequest(
            url: url, expiry: expiry, startsAt: startsAt?.epochSeconds, ip: range, resource: resource,
            output: cookies ? .cookies : .url, hash: hash, keyID: keyID)
    }
}

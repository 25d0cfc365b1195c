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

    /// For `@Option(parsing: .unconditional, transform:)`: the value, or an error that says which
    /// forms are accepted (the parser's own message only says "is invalid").
    static func parse(_ text: String) throws -> TimeArgument {
        if let t = TimeArgument(argument: text) { return t }
        let forms = "give epoch seconds (1803859200) or ISO 8601 with a time and a zone (2027-03-01T00:00:00Z, 2027-03-01T00:00:00+02:00)"
        if text.hasPrefix("-") { throw ValidationError("a time cannot be negative; \(forms)") }
        let b = Array(text.utf8)
        let isDigit = { (c: UInt8) in c >= 0x30 && c <= 0x39 }
        if b.count == 10, b[4] == UInt8(ascii: "-"), b[7] == UInt8(ascii: "-"), b.enumerated().allSatisfy({ $0.offset == 4 || $0.offset == 7 || isDigit($0.element) }) {
            throw ValidationError("a date without a time of day; \(forms)")
        }
        if b.count == 19, b[10] == UInt8(ascii: "T") || b[10] == UInt8(ascii: " ") {
            throw ValidationError("no time zone; add Z for UTC or an offset such as +02:00 (\(text)Z)")
        }
        if text.contains(".") { throw ValidationError("fractions of a second are not accepted (CloudFront's conditions are whole seconds); \(forms)") }
        throw ValidationError(forms)
    }
}

/// `--expires-in`, lifetimes: seconds or a number with s, m, h, d.
struct DurationArgument: ExpressibleByArgument, Sendable {
    let seconds: Int64
    init?(argument: String) {
        guard let s = Durations.parse(argument) else { return nil }
        seconds = s
    }

    /// For `@Option(parsing: .unconditional, transform:)`, so `--expires-in -5` reaches this check
    /// instead of being read as a flag ("Missing value"); the error names the accepted forms.
    static func parse(_ text: String) throws -> DurationArgument {
        if let d = DurationArgument(argument: text) { return d }
        if text.hasPrefix("-") { throw ValidationError("a duration cannot be negative; give \(Durations.help)") }
        throw ValidationError("give \(Durations.help)")
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

    @Option(parsing: .unconditional, help: ArgumentHelp("When the link stops working: \(Timestamps.help).", valueName: "time"), transform: TimeArgument.parse)
    var expiresAt: TimeArgument?

    @Option(parsing: .unconditional, help: ArgumentHelp("How long the link works from signing: \(Durations.help).", valueName: "duration"), transform: DurationArgument.parse)
    var expiresIn: DurationArgument?

    @Option(parsing: .unconditional, help: ArgumentHelp("The link works only after this time (custom policy).", valueName: "time"), transform: TimeArgument.parse)
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

/// The parsers and matchers the fuzz package drives. It is a separate package (built with
/// `-sanitize=fuzzer`), so `package` access does not reach it; this one SPI door does, and
/// JSON, URL-rule and wildcard internals stay `package` for everyone else.
@_spi(Fuzzing) public enum FuzzingEntryPoints {
    /// `JSONReader.parse`: the strict reader jobs, key groups and policies go through.
    public static func parseJSON(_ bytes: [UInt8]) -> JSONValue? { try? JSONReader.parse(bytes) }

    /// `URLRules.validateURL`: the contract's rules for a job's `url`.
    public static func validateURL(_ url: String) throws(SigningError) { try URLRules.validateURL(url) }

    /// `URLRules.validateResource`: the rules for a custom policy's `resource` against its `url`.
    public static func validateResource(_ resource: String, url: String) throws(SigningError) {
        try URLRules.validateResource(resource, url: url)
    }

    /// CloudFront's wildcard match (`*`, `?`) over the whole string.
    public static func wildcardMatches(pattern: String, text: String) -> Bool { Wildcard.matches(pattern: pattern, text: text) }
}

@_spi(Fuzzing) import CFSignCore
import FuzzSupport

/// URL and resource checking, the wildcard matcher and the IPv4 parser on arbitrary text.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    // Split the input at the first NUL: url, then resource.
    let parts = bytes.split(separator: 0, maxSplits: 1, omittingEmptySubsequences: false)
    let url = String(decoding: parts[0], as: UTF8.self)
    let resource = parts.count > 1 ? String(decoding: parts[1], as: UTF8.self) : url
    if (try? FuzzingEntryPoints.validateURL(url)) != nil {
        // A valid URL always matches itself as a resource and "*".
        precondition(FuzzingEntryPoints.wildcardMatches(pattern: url, text: url))
        precondition(FuzzingEntryPoints.wildcardMatches(pattern: "*", text: url))
        _ = try? FuzzingEntryPoints.validateResource(resource, url: url)
    }
    _ = FuzzingEntryPoints.wildcardMatches(pattern: resource, text: url)
    if let range = try? IPv4Range(parsing: url) {
        precondition((try? IPv4Range(parsing: range.description)) == range)
    }
    _ = CloudFrontBase64.decode(url)
    return 0
}

@_cdecl("FuzzURLRules_main")
public func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv) { data, size in fuzz(data, size) }
}

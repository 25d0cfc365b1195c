import CFSignCore
import FuzzSupport

/// `cfsign verify` / `cfsign edge` parsing of signed URLs and cookie sets, then the condition checks.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    if let request = try? SignedRequest.parse(signedURL: text) {
        _ = try? request.checkConditions(now: 1_800_000_000, viewerIP: 0x0A000001)
    }
    // The same text as a cookie header: name=value; name=value
    var cookies: [(name: String, value: String)] = []
    for item in text.split(separator: ";") {
        let pair = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
        if pair.count == 2 { cookies.append((String(pair[0]).trimmingSpaces, String(pair[1]))) }
    }
    if let request = try? SignedRequest.parse(url: "https://d1.example.net/a", cookies: cookies) {
        _ = try? request.checkConditions(now: 1_800_000_000, viewerIP: nil)
    }
    return 0
}

extension String {
    var trimmingSpaces: String { String(drop { $0 == " " }) }
}

@_cdecl("FuzzSignedRequest_main")
public func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv) { data, size in fuzz(data, size) }
}

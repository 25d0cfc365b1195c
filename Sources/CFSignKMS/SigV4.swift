internal import CCFSignOpenSSL
#if canImport(Glibc)
import Glibc
#endif

/// AWS Signature Version 4 for one request (the "Authorization header" form), written here rather
/// than taken from an SDK: cfsign needs two calls of one service, and the SDKs bring hundreds of
/// modules. Checked against AWS's published test-suite vectors and botocore's `SigV4Auth`
/// (Tests/system/test_kms.py), which is the oracle.
public struct SigV4: Sendable {
    public let region: String
    public let service: String

    public init(region: String, service: String) {
        self.region = region
        self.service = service
    }

    /// The request as signed: every header given is signed (callers pass only the ones they send).
    public struct Request: Sendable {
        public var method: String
        /// Already URI-encoded as sent (cfsign only ever posts to "/").
        public var path: String
        /// Already-encoded `name=value` pairs; sorted here.
        public var query: [(String, String)]
        public var headers: [(String, String)]
        public var body: [UInt8]

        public init(method: String, path: String = "/", query: [(String, String)] = [], headers: [(String, String)], body: [UInt8]) {
            self.method = method
            self.path = path
            self.query = query
            self.headers = headers
            self.body = body
        }
    }

    /// `yyyyMMdd'T'HHmmss'Z'` in UTC, the `X-Amz-Date` form.
    public static func amzDate(_ secondsSince1970: Int64) -> String {
        var t = time_t(secondsSince1970)
        var tm = tm()
        gmtime_r(&t, &tm)
        func d(_ v: Int32, _ w: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, w - s.count)) + s
        }
        return d(tm.tm_year + 1900, 4) + d(tm.tm_mon + 1, 2) + d(tm.tm_mday, 2) + "T" + d(tm.tm_hour, 2) + d(tm.tm_min, 2) + d(tm.tm_sec, 2) + "Z"
    }

    /// Header values trimmed and inner runs of spaces collapsed, names lower-cased, sorted; one
    /// name given twice is joined with commas (the SigV4 rules).
    static func canonicalHeaders(_ headers: [(String, String)]) -> (canonical: String, signed: String) {
        var merged: [String: [String]] = [:]
        for (name, value) in headers {
            let trimmed = value.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
            merged[name.lowercased(), default: []].append(trimmed)
        }
        let names = merged.keys.sorted()
        let canonical = names.map { "\($0):\(merged[$0]!.joined(separator: ","))\n" }.joined()
        return (canonical, names.joined(separator: ";"))
    }

    public func canonicalRequest(_ request: Request) -> String {
        let (headers, signed) = Self.canonicalHeaders(request.headers)
        let query = request.query.sorted { $0.0 == $1.0 ? $0.1 < $1.1 : $0.0 < $1.0 }.map { "\($0.0)=\($0.1)" }.joined(separator: "&")
        return [request.method, request.path, query, headers, signed, Hex.encode(Digests.sha256(request.body))].joined(separator: "\n")
    }

    /// The `Authorization` header for `request`, whose headers must already hold `X-Amz-Date`
    /// (equal to `amzDate`) and, with temporary credentials, `X-Amz-Security-Token`.
    public func authorization(_ request: Request, amzDate: String, accessKeyID: String, secretAccessKey: String) -> String {
        let day = String(amzDate.prefix(8))
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let stringToSign = ["AWS4-HMAC-SHA256", amzDate, scope, Hex.encode(Digests.sha256(Array(canonicalRequest(request).utf8)))].joined(separator: "\n")
        var key = Digests.hmacSHA256(key: Array(("AWS4" + secretAccessKey).utf8), Array(day.utf8))
        key = Digests.hmacSHA256(key: key, Array(region.utf8))
        key = Digests.hmacSHA256(key: key, Array(service.utf8))
        key = Digests.hmacSHA256(key: key, Array("aws4_request".utf8))
        let signature = Hex.encode(Digests.hmacSHA256(key: key, Array(stringToSign.utf8)))
        let signed = Self.canonicalHeaders(request.headers).signed
        return "AWS4-HMAC-SHA256 Credential=\(accessKeyID)/\(scope), SignedHeaders=\(signed), Signature=\(signature)"
    }

    /// Adds `X-Amz-Date`, `X-Amz-Security-Token` (temporary credentials) and `Authorization`.
    public func sign(_ request: inout Request, credentials: AWSCredentials, at secondsSince1970: Int64) {
        let date = Self.amzDate(secondsSince1970)
        request.headers.append(("X-Amz-Date", date))
        if let token = credentials.sessionToken { request.headers.append(("X-Amz-Security-Token", token)) }
        let auth = authorization(request, amzDate: date, accessKeyID: credentials.accessKeyID, secretAccessKey: credentials.secretAccessKey)
        request.headers.append(("Authorization", auth))
    }
}

enum Hex {
    static func encode(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// SHA-256 and HMAC-SHA256 through libcrypto (already linked for signing).
public enum Digests {
    public static func sha256(_ data: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        let ok = data.withUnsafeBufferPointer { d in EVP_Digest(d.baseAddress, d.count, &out, &length, EVP_sha256(), nil) }
        precondition(ok == 1, "libcrypto cannot compute SHA-256")
        return out
    }

    public static func hmacSHA256(key: [UInt8], _ data: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var length = 0
        let ok = key.withUnsafeBufferPointer { k in
            data.withUnsafeBufferPointer { d in
                EVP_Q_mac(nil, "HMAC", nil, "SHA256", nil, k.baseAddress, k.count, d.baseAddress, d.count, &out, 32, &length)
            }
        }
        precondition(ok != nil && length == 32, "libcrypto cannot compute HMAC-SHA256")
        return out
    }
}

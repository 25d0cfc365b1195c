import Foundation

/// STS `AssumeRoleWithWebIdentity`: the call is authenticated by the token itself, so it is not
/// SigV4-signed (as in the SDKs).
struct STSClient: Sendable {
    let endpoint: String
    /// The environment variable `endpoint` came from, if any (for messages).
    var variable: String? = nil
    let region: String
    let http: KMSHTTP
    let timeout: Duration

    func assumeRoleWithWebIdentity(roleARN: String, sessionName: String, token: String) async throws(KMSError) -> AWSCredentials {
        let target = try Endpoint(endpoint, service: "sts", variable: variable)
        let form = [("Action", "AssumeRoleWithWebIdentity"), ("Version", "2011-06-15"), ("RoleArn", roleARN),
                    ("RoleSessionName", sessionName), ("WebIdentityToken", token)]
            .map { "\($0.0)=\(Self.formEncode($0.1))" }.joined(separator: "&")
        let headers = [("Host", target.host), ("Content-Type", "application/x-www-form-urlencoded; charset=utf-8"), ("Accept", "application/xml")]
        let answer = try await http.post(target.url, headers: headers, body: Array(form.utf8), timeout: timeout, service: "STS")
        guard answer.status == 200 else {
            let e = KMSError.from(status: answer.status, body: answer.body, service: "STS AssumeRoleWithWebIdentity")
            // Web identity failures are credential problems unless STS is merely unavailable.
            throw e.retryable ? e : KMSError(.credentials, code: e.code, "STS refused AssumeRoleWithWebIdentity for role \(roleARN): \(e.message)")
        }
        let text = String(decoding: answer.body, as: UTF8.self)
        guard let id = XML.element("AccessKeyId", in: text), let secret = XML.element("SecretAccessKey", in: text) else {
            throw KMSError(.credentials, code: nil, "STS AssumeRoleWithWebIdentity for role \(roleARN) answered without credentials")
        }
        let expiration = Self.expiration(XML.element("Expiration", in: text), now: Date())
        return AWSCredentials(accessKeyID: id, secretAccessKey: secret, sessionToken: XML.element("SessionToken", in: text), expiration: expiration)
    }

    /// STS's shortest session (DurationSeconds 900): what an answer whose `Expiration` is missing
    /// or unreadable is taken to last, so such credentials are renewed soon instead of never.
    static let assumedLifetime: TimeInterval = 900
    /// STS's longest session (12 hours): a later `Expiration` is not believed either.
    static let longestLifetime: TimeInterval = 43_200

    /// The expiry to act on for an answer's `Expiration` text, received at `now`: always a date,
    /// within STS's own bounds.
    static func expiration(_ text: String?, now: Date) -> Date {
        guard let text, let date = date(text) else { return now.addingTimeInterval(assumedLifetime) }
        return min(date, now.addingTimeInterval(longestLifetime))
    }

    static func date(_ text: String) -> Date? {
        let f = ISO8601DateFormatter()
        if let d = f.date(from: text) { return d }
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.date(from: text)
    }

    /// application/x-www-form-urlencoded, unreserved characters kept (RFC 3986).
    static func formEncode(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(b))
            default:
                out += "%" + (b < 16 ? "0" : "") + String(b, radix: 16, uppercase: true)
            }
        }
        return out
    }
}

/// A signed URL or signed-cookie set, assembled exactly as AWS's signers do (PROTOCOL.md, "Signatures").
public struct SignedLink: Sendable, Equatable {
    public enum Output: Sendable, Equatable {
        case url(String)
        /// Cookie names and values in the order CloudFront documents them.
        case cookies([(name: String, value: String)])

        public static func == (a: Output, b: Output) -> Bool {
            switch (a, b) {
            case let (.url(x), .url(y)): return x == y
            case let (.cookies(x), .cookies(y)):
                return x.count == y.count && zip(x, y).allSatisfy { $0.name == $1.name && $0.value == $1.value }
            default: return false
            }
        }
    }

    public let output: Output
    public let keyID: String
    public let expiresAt: Int64
    public let policyKind: Policy.Kind

    /// Assembles the link from a plan, the raw signature (PKCS#1 v1.5 or DER ECDSA) and the key id.
    public init(plan: SigningPlan, policyBytes: [UInt8], signature: [UInt8], keyID: String) {
        let policyParameter: (name: String, value: String)
        switch plan.policy.kind {
        case .canned: policyParameter = ("Expires", String(plan.policy.expiresAt))
        case .custom: policyParameter = ("Policy", CloudFrontBase64.encode(policyBytes))
        }
        let sig = CloudFrontBase64.encode(signature)
        switch plan.request.output {
        case .url:
            let url = plan.request.url
            var s = url
            s.reserveCapacity(url.utf8.count + sig.utf8.count + policyParameter.value.utf8.count + keyID.utf8.count + 64)
            // One append per piece, into the reserved string: no temporary strings.
            s += url.utf8.contains(UInt8(ascii: "?")) ? "&" : "?"
            s += policyParameter.name
            s += "="
            s += policyParameter.value
            s += "&Signature="
            s += sig
            s += "&Key-Pair-Id="
            s += keyID
            if plan.hash == .sha256 { s += "&Hash-Algorithm=SHA256" }
            output = .url(s)
        case .cookies:
            var cookies: [(name: String, value: String)] = [
                ("CloudFront-" + policyParameter.name, policyParameter.value),
                ("CloudFront-Signature", sig),
                ("CloudFront-Key-Pair-Id", keyID),
            ]
            if plan.hash == .sha256 { cookies.append(("CloudFront-Hash-Algorithm", "SHA256")) }
            output = .cookies(cookies)
        }
        self.keyID = keyID
        self.expiresAt = plan.policy.expiresAt
        self.policyKind = plan.policy.kind
    }

    /// What `cfsign sign` prints: the URL, or one `Name=value` line per cookie.
    public var plainText: String {
        switch output {
        case .url(let u): return u
        case .cookies(let c): return c.map { "\($0.name)=\($0.value)" }.joined(separator: "\n")
        }
    }
}

/// The contract's reply objects and dead-list entries, as compact JSON (PROTOCOL.md, "Reply").
public enum ReplyEncoder {
    /// `{"id":…,"ok":true,"url":…|"cookies":{…},"key_id":…,"expires_at":…,"policy":"canned"|"custom"}`
    public static func success(id: String, link: SignedLink) -> [UInt8] {
        var w = JSONWriter(capacity: 512)
        w.beginObject()
        w.field("id", id)
        w.field("ok", true)
        switch link.output {
        case .url(let u): w.field("url", u)
        case .cookies(let cookies):
            w.key("cookies")
            w.beginObject()
            for c in cookies { w.field(c.name, c.value) }
            w.endObject()
        }
        w.field("key_id", link.keyID)
        w.field("expires_at", link.expiresAt)
        w.field("policy", link.policyKind.rawValue)
        w.endObject()
        return w.bytes
    }

    /// `{"id":…,"ok":false,"error":{"code":…,"message":…}}`
    public static func failure(id: String, error: SigningError) -> [UInt8] {
        var w = JSONWriter(capacity: 256)
        w.beginObject()
        w.field("id", id)
        w.field("ok", false)
        w.key("error")
        writeError(error, to: &w)
        w.endObject()
        return w.bytes
    }

    /// Raw job text kept in a dead entry: at most this many bytes.
    public static let deadJobExcerpt = 1024

    /// `{"error":{…},"job":"<raw text, ≤1 KiB, invalid UTF-8 as U+FFFD>","worker":…,"at":<epoch ms>}`
    public static func dead(error: SigningError, job: some Collection<UInt8>, worker: String, atMilliseconds: Int64) -> [UInt8] {
        var w = JSONWriter(capacity: 1400)
        w.beginObject()
        w.key("error")
        writeError(error, to: &w)
        w.field("job", excerpt(job))
        w.field("worker", worker)
        w.field("at", atMilliseconds)
        w.endObject()
        return w.bytes
    }

    /// The first KiB of the raw job, cut on a character boundary where the cut splits one.
    static func excerpt(_ job: some Collection<UInt8>) -> String {
        var bytes = Array(job.prefix(deadJobExcerpt))
        if job.count > deadJobExcerpt {
            // Drop a partial UTF-8 sequence at the cut instead of turning it into U+FFFD.
            var i = bytes.count - 1
            var back = 0
            while i >= 0, back < 3, bytes[i] & 0xC0 == 0x80 { i -= 1; back += 1 }
            if i >= 0, bytes[i] >= 0xC0 {
                let need = bytes[i] >= 0xF0 ? 4 : bytes[i] >= 0xE0 ? 3 : 2
                if bytes.count - i < need { bytes.removeSubrange(i...) }
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func writeError(_ error: SigningError, to w: inout JSONWriter) {
        w.beginObject()
        w.field("code", error.code.rawValue)
        w.field("message", error.message)
        w.endObject()
    }
}

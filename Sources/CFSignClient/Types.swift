import CFSignCore
import Foundation

/// What can go wrong when asking the fleet for a link.
public enum CFSignClientError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The job was refused (by local checks or by a worker) with the contract's error code.
    case signing(code: ErrorCode, message: String)
    /// No reply within the timeout: no worker running on the namespace, or a backlog.
    case timeout(namespace: String, after: Duration)
    /// Redis could not be reached or refused a command.
    case redis(String)
    /// A bad Redis URL or namespace.
    case invalidConfiguration(String)
    /// The client was closed while the call waited.
    case closed
    /// The calling task was cancelled; a job not yet pushed was not pushed.
    case cancelled

    /// The contract's error code, when the fleet (or the local checks) refused the job.
    public var code: ErrorCode? {
        if case .signing(let code, _) = self { return code }
        return nil
    }

    /// The sentence for people, without the code.
    public var message: String {
        if case .signing(_, let message) = self { return message }
        return description
    }

    public var description: String {
        switch self {
        case .signing(let code, let message): return "\(code.rawValue): \(message)"
        case .timeout(let ns, let after):
            return "no worker answered within \(Self.seconds(after)) s; is a worker running on namespace \(ns)? `cfsign status` shows the fleet"
        case .redis(let m): return "Redis: \(m)"
        case .invalidConfiguration(let m): return m
        case .closed: return "the client was closed"
        case .cancelled: return "the call was cancelled"
        }
    }

    static func seconds(_ d: Duration) -> String {
        let s = Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
        return s == s.rounded() ? String(Int(s)) : String(s)
    }
}

/// One signing request, checked locally with the same rules the workers apply.
public struct SignRequest: Sendable {
    public let request: SigningRequest

    public init(url: String, expiresIn: Int64? = nil, expiresAt: Int64? = nil, startsAt: Int64? = nil, ip: String? = nil,
                resource: String? = nil, output: OutputKind = .url, hash: HashAlgorithm? = nil, keyID: String? = nil) throws(CFSignClientError) {
        do throws(SigningError) {
            let expiry: Expiry
            switch (expiresAt, expiresIn) {
            case (nil, nil): throw SigningError(.invalidExpiry, "give exactly one of expiresAt or expiresIn")
            case (_?, _?): throw SigningError(.invalidExpiry, "give only one of expiresAt and expiresIn")
            case (let at?, nil): expiry = .at(at)
            case (nil, let s?): expiry = .after(seconds: s)
            }
            try URLRules.validateURL(url)
            let range = try ip.map { (text) throws(SigningError) in try IPv4Range(parsing: text) }
            request = try SigningRequest(url: url, expiry: expiry, startsAt: startsAt, ip: range, resource: resource, output: output, hash: hash, keyID: keyID)
        } catch {
            throw .signing(code: error.code, message: error.message)
        }
    }

    public init(_ request: SigningRequest) { self.request = request }

    /// The job as the contract writes it.
    /// - Parameter trace: the caller's span context, so the worker's span is its child.
    func jobJSON(id: String, replyTo: String, trace: TraceContext? = nil) -> [UInt8] {
        var w = JSONWriter(capacity: 256)
        w.beginObject()
        w.field("id", id)
        w.field("reply_to", replyTo)
        w.field("url", request.url)
        switch request.expiry {
        case .at(let t): w.field("expires_at", t)
        case .after(let s): w.field("expires_in", s)
        }
        if let s = request.startsAt { w.field("starts_at", s) }
        if let ip = request.ip { w.field("ip", ip.description) }
        if let r = request.resource { w.field("resource", r) }
        if request.output == .cookies { w.field("output", "cookies") }
        if let h = request.hash { w.field("hash", h.rawValue) }
        if let k = request.keyID { w.field("key_id", k) }
        // cfsign extension: lets workers export enqueue-to-reply time (cfsign_job_age_seconds).
        w.field("enqueued_at_ms", Int64((Date().timeIntervalSince1970 * 1000).rounded()))
        if let trace {
            w.field("traceparent", trace.traceparent)
            if let state = trace.tracestate { w.field("tracestate", state) }
        }
        w.endObject()
        return w.bytes
    }
}

/// A successful reply: the signed URL or the cookie set, with the key and expiry used.
public struct SignedReply: Sendable, Equatable {
    public let id: String
    /// The signed URL (for `sign(url:…)`).
    public let url: String?
    /// Cookie names and values in CloudFront's order (for `signCookies(url:…)`).
    public let cookies: [Cookie]?
    public let keyID: String
    public let expiresAt: Int64
    /// `"canned"` or `"custom"`.
    public let policy: String
    /// The reply object exactly as the worker pushed it.
    public let replyJSON: String

    public struct Cookie: Sendable, Equatable {
        public let name: String
        public let value: String
    }

    /// What `cfsign sign` prints for the same link: the URL, or one `Name=value` line per cookie.
    public var plainText: String {
        if let url { return url }
        return (cookies ?? []).map { "\($0.name)=\($0.value)" }.joined(separator: "\n")
    }

    struct Parsed {
        let id: String
        let result: Result<SignedReply, CFSignClientError>
    }

    struct Unreadable: Error {}

    /// Reads a reply object (PROTOCOL.md, "Reply").
    static func parse(_ raw: [UInt8]) throws -> Parsed {
        let value = try JSONReader.parse(raw)
        guard case .string(let id)? = value[member: "id"], case .bool(let ok)? = value[member: "ok"] else { throw Unreadable() }
        if !ok {
            guard let error = value[member: "error"], case .string(let codeText)? = error[member: "code"] else { throw Unreadable() }
            var message = ""
            if case .string(let m)? = error[member: "message"] { message = m }
            let code = ErrorCode(rawValue: codeText)  // kept as sent, known to this build or not
            return Parsed(id: id, result: .failure(.signing(code: code, message: message)))
        }
        guard case .string(let keyID)? = value[member: "key_id"], case .integer(let expiresAt)? = value[member: "expires_at"] else { throw Unreadable() }
        var policy = "canned"
        if case .string(let p)? = value[member: "policy"] { policy = p }
        var url: String?
        var cookies: [Cookie]?
        if case .string(let u)? = value[member: "url"] { url = u }
        if case .object(let members)? = value[member: "cookies"] {
            cookies = members.compactMap { name, v in
                if case .string(let s) = v { return Cookie(name: name, value: s) }
                return nil
            }
        }
        guard url != nil || cookies != nil else { throw Unreadable() }
        return Parsed(id: id, result: .success(SignedReply(id: id, url: url, cookies: cookies, keyID: keyID, expiresAt: expiresAt, policy: policy, replyJSON: String(decoding: raw, as: UTF8.self))))
    }
}

/// When a link stops working: at a fixed time, or a duration after the worker signs it.
public enum Expiry: Sendable, Hashable {
    case at(Int64)
    case after(seconds: Int64)
}

/// What a job asks for: a signed URL, or the signed-cookie set for the same policy.
public enum OutputKind: String, Sendable, Hashable {
    case url
    case cookies
}

/// CloudFront public key ids (`Key-Pair-Id`): 1–128 printable ASCII characters other than
/// space, `&`, `=`, `;`, `"` and `\`, so an id can never break the URL, a cookie or JSON.
public enum KeyID {
    public static func isValid(_ id: String) -> Bool {
        let n = id.utf8.count
        guard n >= 1, n <= 128 else { return false }
        return id.utf8.allSatisfy { b in
            b > 0x20 && b < 0x7F && b != UInt8(ascii: "&") && b != UInt8(ascii: "=") && b != UInt8(ascii: ";")
                && b != UInt8(ascii: "\"") && b != UInt8(ascii: "\\")
        }
    }

    public static let rule = "1-128 printable ASCII characters other than space, '&', '=', ';', '\"' and '\\'"
}

/// A signing request whose fields have each been checked (everything but time, which needs a clock).
///
/// Built from a job's JSON by `JobParser`, or from `cfsign sign`'s flags; both paths share these checks,
/// so they give the same codes and messages.
public struct SigningRequest: Sendable, Hashable {
    public let url: String
    public let expiry: Expiry
    public let startsAt: Int64?
    public let ip: IPv4Range?
    public let resource: String?
    public let output: OutputKind
    /// nil: the signer's configured default.
    public let hash: HashAlgorithm?
    /// nil: the key group's active key.
    public let keyID: String?
    /// cfsign extension (`round_expiry`): round the expiry up to a multiple of this many seconds, so
    /// repeated requests for one object yield one identical, cacheable URL. nil: the signer's default.
    public let roundExpiry: Int64?

    public init(
        url: String, expiry: Expiry, startsAt: Int64? = nil, ip: IPv4Range? = nil, resource: String? = nil,
        output: OutputKind = .url, hash: HashAlgorithm? = nil, keyID: String? = nil, roundExpiry: Int64? = nil
    ) throws(SigningError) {
        try URLRules.validateURL(url)
        try self.init(
            validatedURL: url, expiry: expiry, startsAt: startsAt, ip: ip, resource: resource,
            output: output, hash: hash, keyID: keyID, roundExpiry: roundExpiry)
    }

    /// The other checks, for a caller that has just run `URLRules.validateURL(url)` itself
    /// (`JobParser`, which reports URL problems before the IP's): the URL is not walked twice.
    init(
        validatedURL url: String, expiry: Expiry, startsAt: Int64?, ip: IPv4Range?, resource: String?,
        output: OutputKind, hash: HashAlgorithm?, keyID: String?, roundExpiry: Int64?
    ) throws(SigningError) {
        switch expiry {
        case .at(let t) where t <= 0:
            throw SigningError(.invalidExpiry, "expires_at \(t) is not a time in epoch seconds")
        case .after(let s) where s <= 0:
            throw SigningError(.invalidExpiry, "expires_in \(s) must be a positive number of seconds")
        default: break
        }
        if let startsAt, startsAt < 0 {
            throw SigningError(.invalidExpiry, "starts_at \(startsAt) is not a time in epoch seconds")
        }
        if let resource { try URLRules.validateResource(resource, url: url) }
        if let keyID, !KeyID.isValid(keyID) {
            throw SigningError(.unknownKey, "key_id is not a valid key id (\(KeyID.rule))")
        }
        self.url = url
        self.expiry = expiry
        self.startsAt = startsAt
        self.ip = ip
        self.resource = resource
        self.output = output
        self.hash = hash
        if let roundExpiry, roundExpiry < 0 || roundExpiry > SigningLimits.maximumRounding {
            throw SigningError(.invalidExpiry, "round_expiry \(roundExpiry) must be 0 (off) to \(SigningLimits.maximumRounding) seconds")
        }
        self.keyID = keyID
        self.roundExpiry = roundExpiry
    }

    /// Canned when there is nothing but an expiry; custom otherwise.
    public var isCanned: Bool { startsAt == nil && ip == nil && resource == nil }
}

/// A job that can be answered: its `id`, where to answer, and what it asks for.
public struct Job: Sendable {
    public let id: String
    public let replyTo: String
    public let request: SigningRequest
    /// cfsign extension: when the producer pushed the job (epoch ms), for the job-age metric.
    /// Always within `validEnqueuedAt` (a value outside it is read as absent), so a consumer may
    /// subtract it from a clock reading without overflow.
    public let enqueuedAtMilliseconds: Int64?
    /// The producer's W3C trace context (`traceparent`/`tracestate`), when valid; read only when
    /// the worker traces (see `JobParser.parse(_:namespace:trace:)`).
    public var trace: TraceContext? = nil

    /// `enqueued_at_ms` values kept: 0 through the latest expiry (9999-12-31), in milliseconds.
    public static let validEnqueuedAt: ClosedRange<Int64> = 0...(SigningLimits.latestExpiry * 1000 + 999)

    public init(id: String, replyTo: String, request: SigningRequest, enqueuedAtMilliseconds: Int64?) {
        self.id = id
        self.replyTo = replyTo
        self.request = request
        self.enqueuedAtMilliseconds = enqueuedAtMilliseconds.flatMap { Self.validEnqueuedAt.contains($0) ? $0 : nil }
    }
}

/// What reading a job's bytes gives.
public enum JobIntake: Sendable {
    /// A valid job, to be signed.
    case job(Job)
    /// A job that names where to answer but cannot be signed: answer with the error.
    case refused(id: String, replyTo: String, error: SigningError)
    /// A job whose `id` or `reply_to` cannot be used: it goes to `{NS}:dead`.
    case dead(SigningError)
}

/// Reads a job's raw bytes into a `JobIntake` (PROTOCOL.md, "Job"). Never throws, never traps.
public enum JobParser {
    /// Jobs larger than this are not parsed at all.
    public static let maximumSize = 64 * 1024
    public static let maximumIDLength = 200

    public static func parse(_ bytes: some Collection<UInt8>, namespace: Namespace) -> JobIntake {
        parse(Array(bytes), namespace: namespace)
    }

    /// The same for an array, without generic dispatch (what the worker calls, once per job).
    public static func parse(_ bytes: [UInt8], namespace: Namespace) -> JobIntake {
        var unused: TraceContext? = nil
        return parse(bytes, namespace: namespace, trace: &unused, readTrace: false)
    }

    /// Also reads the job's optional trace context into `trace` (for refused and dead jobs too, as
    /// long as the job is a JSON object): a malformed or unusable one is nil, never an error.
    public static func parse(_ bytes: [UInt8], namespace: Namespace, trace: inout TraceContext?) -> JobIntake {
        parse(bytes, namespace: namespace, trace: &trace, readTrace: true)
    }

    private static func parse(_ bytes: [UInt8], namespace: Namespace, trace: inout TraceContext?, readTrace: Bool) -> JobIntake {
        if bytes.count > maximumSize {
            return .dead(SigningError(.invalidJob, "job is \(bytes.count) bytes; at most \(maximumSize) are read"))
        }
        let document: JSONObjectDocument
        do throws(JSONObjectDocument.Failure) {
            document = try JSONObjectDocument(parsing: bytes)
        } catch {
            return .dead(SigningError(.invalidJob, "job is \(error)"))
        }
        // Duplicates are not refused wholesale: one of `id`/`reply_to` makes the job unanswerable
        // (dead), any other is answered as invalid_job.
        var fields = Fields(members: document.members, duplicates: document.memberDuplicates)
        if readTrace, let parent = (try? fields.string("traceparent")) ?? nil {
            let state = (try? fields.string("tracestate")) ?? nil
            trace = TraceContext(traceparent: parent, tracestate: state)
        }
        // Without a readable id and reply_to nobody can be answered.
        let id: String
        let replyTo: String
        do throws(SigningError) {
            for d in ["id", "reply_to"] where fields.duplicates.contains(d) {
                throw SigningError(.invalidJob, "field \"\(d)\" appears more than once")
            }
            guard let i = try fields.string("id") else { throw SigningError(.missingField, "job has no \"id\"") }
            guard !i.isEmpty, i.utf8.count <= maximumIDLength else {
                throw SigningError(.invalidJob, "id must be 1-\(maximumIDLength) bytes; it is \(i.utf8.count)")
            }
            guard let r = try fields.string("reply_to") else { throw SigningError(.missingField, "job has no \"reply_to\"") }
            // Bytes, not String.hasPrefix: that compares by canonical equivalence, so "{\u{212A}s}:reply:x"
            // (KELVIN SIGN) would pass for namespace "Ks" while naming a different Redis key.
            guard Self.startsWithBytes(r, namespace.replyPrefix), r.utf8.count > namespace.replyPrefix.utf8.count else {
                throw SigningError(.invalidJob, "reply_to must start with \"\(namespace.replyPrefix)\" and name a list after it; a worker never writes anywhere else")
            }
            id = i
            replyTo = r
        } catch {
            return .dead(error)
        }
        do throws(SigningError) {
            let request = try request(from: &fields)
            // Optional extension field; a value of another type or outside `Job.validEnqueuedAt`
            // is ignored, never refused (the initializer drops it).
            let enqueued = (try? fields.integer("enqueued_at_ms")) ?? nil
            var job = Job(id: id, replyTo: replyTo, request: request, enqueuedAtMilliseconds: enqueued)
            job.trace = trace
            return .job(job)
        } catch {
            return .refused(id: id, replyTo: replyTo, error: error)
        }
    }

    /// Whether `text` begins with the bytes of `prefix`, compared over contiguous UTF-8 (the generic
    /// `starts(with:)` on two `String.UTF8View`s walks them element by element).
    private static func startsWithBytes(_ text: String, _ prefix: String) -> Bool {
        let fast = text.utf8.withContiguousStorageIfAvailable { t in
            prefix.utf8.withContiguousStorageIfAvailable { p in
                t.count >= p.count && UnsafeBufferPointer(rebasing: t[..<p.count]).elementsEqual(p)
            }
        }
        return (fast ?? nil) ?? text.utf8.starts(with: prefix.utf8)
    }

    private static func request(from fields: inout Fields) throws(SigningError) -> SigningRequest {
        if let duplicate = fields.duplicate {
            throw SigningError(.invalidJob, "field \"\(duplicate)\" appears more than once")
        }
        guard let url = try fields.string("url") else {
            throw SigningError(.missingField, "job has no \"url\"; give the absolute URL of the object to sign")
        }
        let expiresAt = try fields.integer("expires_at")
        let expiresIn = try fields.integer("expires_in")
        let startsAt = try fields.integer("starts_at")
        let ipText = try fields.string("ip")
        let resource = try fields.string("resource")
        let keyID = try fields.string("key_id")
        let outputText = try fields.string("output")
        let hashText = try fields.string("hash")
        let roundExpiry = try fields.integer("round_expiry")

        let output: OutputKind
        switch outputText {
        case nil: output = .url
        case let text?:
            guard let o = OutputKind(rawValue: text) else {
                throw SigningError(.invalidJob, "output must be \"url\" or \"cookies\", not \"\(text)\"")
            }
            output = o
        }
        let expiry: Expiry
        switch (expiresAt, expiresIn) {
        case (nil, nil):
            throw SigningError(.invalidExpiry, "job has neither expires_at nor expires_in; give exactly one")
        case (_?, _?):
            throw SigningError(.invalidExpiry, "job has both expires_at and expires_in; give exactly one")
        case (let at?, nil): expiry = .at(at)
        case (nil, let seconds?): expiry = .after(seconds: seconds)
        }
        var hash: HashAlgorithm? = nil
        if let hashText {
            guard let h = HashAlgorithm(wireName: hashText) else {
                throw SigningError(.unsupportedHash, "hash \"\(hashText)\" is not supported; use \"SHA1\" or \"SHA256\" (exact case)")
            }
            hash = h
        }
        // URL problems come before the IP's, so the most basic mistake is reported first.
        try URLRules.validateURL(url)
        let ip = try ipText.map { (text) throws(SigningError) in try IPv4Range(parsing: text) }
        return try SigningRequest(
            validatedURL: url, expiry: expiry, startsAt: startsAt, ip: ip, resource: resource,
            output: output, hash: hash, keyID: keyID, roundExpiry: roundExpiry)
    }

    /// Typed access to a job's members: a wrong type is `invalid_job`; `null` counts as absent.
    private struct Fields {
        var members: [(String, JSONValue)]
        /// The first name that appears more than once, for the message.
        var duplicate: String?
        /// Every name that appears more than once (an `id` or `reply_to` among them must not be hidden
        /// behind an earlier duplicate of another field).
        var duplicates: Set<String> = []

        /// `duplicates`: the document's duplicated top-level names, in order (`JSONObjectDocument`
        /// has found them already; not searched again here).
        init(members: [(String, JSONValue)], duplicates found: [String]) {
            self.members = members
            duplicate = found.first
            duplicates = Set(found)
        }

        func value(_ name: String) -> JSONValue? {
            // Lengths first: most names differ in length, and comparing two Strings is a call.
            let length = name.utf8.count
            for (n, v) in members where n.utf8.count == length && n == name { return v }
            return nil
        }

        func string(_ name: String) throws(SigningError) -> String? {
            switch value(name) {
            case nil, .null?: return nil
            case .string(let s)?: return s
            case let other?: throw SigningError(.invalidJob, "\(name) must be a string, not \(other.typeName)")
            }
        }

        func integer(_ name: String) throws(SigningError) -> Int64? {
            switch value(name) {
            case nil, .null?: return nil
            // An integer too long for 64 bits is clamped, so its range check gives the same code
            // as 2^63-1 (e.g. ttl_too_long), not a type error.
            case let v? where v.clampedInteger != nil: return v.clampedInteger
            case let other?: throw SigningError(.invalidJob, "\(name) must be an integer number of seconds, not \(other.typeName)")
            }
        }
    }
}

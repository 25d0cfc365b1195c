/// The policy statement a signature covers (PROTOCOL.md, "Signatures").
///
/// Built byte by byte in the order AWS's signers write it: `Resource`, then `DateLessThan`,
/// `IpAddress`, `DateGreaterThan`; compact, `/` not escaped. Resource text needs no escaping because
/// the URL rules admit only printable ASCII without `"` and `\`.
public struct Policy: Sendable, Hashable {
    public enum Kind: String, Sendable { case canned, custom }

    public let kind: Kind
    public let resource: String
    public let expiresAt: Int64
    public let startsAt: Int64?
    public let ip: IPv4Range?

    public init(kind: Kind, resource: String, expiresAt: Int64, startsAt: Int64? = nil, ip: IPv4Range? = nil) {
        self.kind = kind
        self.resource = resource
        self.expiresAt = expiresAt
        self.startsAt = startsAt
        self.ip = ip
    }

    /// The exact bytes that are hashed and signed.
    public var bytes: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(resource.utf8.count + 160)
        out.append(contentsOf: #"{"Statement":[{"Resource":""#.utf8)
        out.append(contentsOf: resource.utf8)
        out.append(contentsOf: #"","Condition":{"DateLessThan":{"AWS:EpochTime":"#.utf8)
        out.append(contentsOf: String(expiresAt).utf8)
        out.append(UInt8(ascii: "}"))
        if let ip {
            out.append(contentsOf: #","IpAddress":{"AWS:SourceIp":""#.utf8)
            out.append(contentsOf: ip.description.utf8)
            out.append(contentsOf: #""}"#.utf8)
        }
        if let startsAt {
            out.append(contentsOf: #","DateGreaterThan":{"AWS:EpochTime":"#.utf8)
            out.append(contentsOf: String(startsAt).utf8)
            out.append(UInt8(ascii: "}"))
        }
        out.append(contentsOf: "}}]}".utf8)
        return out
    }
}

/// What the signer may do: the lifetime limit and the digests it can use.
public struct SigningLimits: Sendable {
    /// The longest a link may live, in seconds; nil for no limit (`cfsign sign` without `--max-lifetime`).
    public var maximumLifetime: Int64?
    /// The digest used when a job names none.
    public var defaultHash: HashAlgorithm
    /// The digests this OpenSSL build actually signs with (probed at start-up).
    public var supportedHashes: Set<HashAlgorithm>
    /// Round `expires_in` expiries up to a multiple of this many seconds (0: off); a job's
    /// `round_expiry` overrides it. Never makes a link outlive `maximumLifetime`.
    public var expiryRounding: Int64 = 0

    public init(maximumLifetime: Int64?, defaultHash: HashAlgorithm = .sha1, supportedHashes: Set<HashAlgorithm> = Set(HashAlgorithm.allCases)) {
        self.maximumLifetime = maximumLifetime
        self.defaultHash = defaultHash
        self.supportedHashes = supportedHashes
    }

    /// Links cannot expire after 9999-12-31, whatever the limit: no viewer or CDN clock gets there.
    public static let latestExpiry: Int64 = 253_402_300_799

    /// The widest `round_expiry` (a job's or the worker's): 366 days.
    public static let maximumRounding: Int64 = 366 * 86400
}

/// A request resolved against a clock and the signer's limits: everything needed to sign.
public struct SigningPlan: Sendable {
    public let request: SigningRequest
    public let policy: Policy
    public let hash: HashAlgorithm

    public var expiresAt: Int64 { policy.expiresAt }

    /// `t` rounded up to a multiple of `granularity`; nil when that does not fit in 64 bits (it is
    /// then far past the latest expiry anyway) or `granularity` is not positive.
    static func roundedUp(_ t: Int64, to granularity: Int64) -> Int64? {
        guard granularity > 0 else { return nil }
        let (q, r) = t.quotientAndRemainder(dividingBy: granularity)
        if r <= 0 { return r == 0 ? t : q * granularity }  // negative t: toward +infinity is q * g
        let (next, o1) = q.addingReportingOverflow(1)
        guard !o1 else { return nil }
        let (v, o2) = next.multipliedReportingOverflow(by: granularity)
        return o2 ? nil : v
    }

    /// Resolves the expiry and checks it, one code per class of bad expiry (docs/PROTOCOL.md,
    /// "Expiry classes"):
    /// - `invalid_expiry`: `expires_at` not after the signer's clock, `starts_at` not before the expiry
    ///   (the request itself already refused non-positive values);
    /// - `ttl_too_long`: the link would live longer than the signer allows, at any magnitude: past
    ///   the maximum lifetime, past 9999-12-31T23:59:59Z (with or without a maximum), or so far that
    ///   `now + expires_in` overflows.
    ///
    /// - Parameter rules: the signing policy whose lifetime rules expiry rounding must not push past
    ///   (the same limits `SigningRules.check` refuses with); empty for `cfsign sign`.
    public init(_ request: SigningRequest, now: Int64, limits: SigningLimits, rules: SigningRules = SigningRules()) throws(SigningError) {
        var expiresAt: Int64
        switch request.expiry {
        case .at(let t):
            guard t > now else {
                throw SigningError(.invalidExpiry, "expires_at \(t) is not in the future (the signer's clock says \(now)); links must expire after they are signed")
            }
            expiresAt = t
        case .after(let seconds):
            // Saturates: an overflow is simply "too far", judged below like any other.
            let (sum, overflow) = now.addingReportingOverflow(seconds)
            expiresAt = overflow ? Int64.max : sum
        }
        let granularity: Int64
        switch request.expiry {
        case .after: granularity = request.roundExpiry ?? limits.expiryRounding
        case .at: granularity = request.roundExpiry ?? 0
        }
        if granularity > 0, let rounded = Self.roundedUp(expiresAt, to: granularity), rounded <= SigningLimits.latestExpiry {
            // Rounding never pushes a link past the strictest lifetime limit it can reach.
            let cap = rules.lifetimeLimits(for: request, maximum: limits.maximumLifetime).strictest
            if cap.map({ SigningRules.lifetime(rounded, now: now) <= $0 }) ?? true { expiresAt = rounded }
        }
        if let startsAt = request.startsAt, startsAt >= expiresAt {
            throw SigningError(.invalidExpiry, "starts_at \(startsAt) is not before the expiry \(expiresAt); a link must start before it ends")
        }
        let lifetime = SigningRules.lifetime(expiresAt, now: now)
        let tooFar = expiresAt > SigningLimits.latestExpiry
        if let maximum = limits.maximumLifetime, lifetime > maximum {
            let lives = tooFar ? "past 9999-12-31T23:59:59Z" : Durations.describe(lifetime)
            throw SigningError(.ttlTooLong, "the link would live \(lives); this signer allows at most \(Durations.describe(maximum))")
        }
        if tooFar {
            throw SigningError(.ttlTooLong, "the link would expire after 9999-12-31T23:59:59Z (\(SigningLimits.latestExpiry)), the latest expiry any signer gives; give a nearer time")
        }
        let hash = request.hash ?? limits.defaultHash
        guard limits.supportedHashes.contains(hash) else {
            let available = HashAlgorithm.allCases.filter { limits.supportedHashes.contains($0) }.map(\.rawValue)
            throw SigningError(.unsupportedHash, "this signer's OpenSSL does not sign with \(hash.rawValue); available: \(available.isEmpty ? "none" : available.joined(separator: ", "))")
        }
        self.request = request
        self.hash = hash
        self.policy = Policy(
            kind: request.isCanned ? .canned : .custom,
            resource: request.resource ?? request.url,
            expiresAt: expiresAt, startsAt: request.startsAt, ip: request.ip)
    }
}

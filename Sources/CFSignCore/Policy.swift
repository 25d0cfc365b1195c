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
}

/// A request resolved against a clock and the signer's limits: everything needed to sign.
public struct SigningPlan: Sendable {
    public let request: SigningRequest
    public let policy: Policy
    public let hash: HashAlgorithm

    public var expiresAt: Int64 { policy.expiresAt }

    /// - Parameter roundingCap: a tighter lifetime limit (e.g. a signing-policy prefix rule) that
    ///   expiry rounding must not push past, besides `limits.maximumLifetime`.
    public init(_ request: SigningRequest, now: Int64, limits: SigningLimits, roundingCap: Int64? = nil) throws(SigningError) {
        var expiresAt: Int64
        switch request.expiry {
        case .at(let t):
            guard t > now else {
                throw SigningError(.invalidExpiry, "expires_at \(t) is not in the future (the signer's clock says \(now)); links must expire after they are signed")
            }
            expiresAt = t
        case .after(let seconds):
            let (sum, overflow) = now.addingReportingOverflow(seconds)
            expiresAt = overflow ? Int64.max : sum
        }
        let granularity: Int64
        switch request.expiry {
        case .after: granularity = request.roundExpiry ?? limits.expiryRounding
        case .at: granularity = request.roundExpiry ?? 0
        }
        if granularity > 0, expiresAt <= SigningLimits.latestExpiry {
            let rounded = (expiresAt + granularity - 1) / granularity * granularity
            // Rounding never pushes a link past the lifetime limit.
            let cap = [limits.maximumLifetime, roundingCap].compactMap { $0 }.min()
            if cap.map({ rounded - now <= $0 }) ?? true { expiresAt = rounded }
        }
        if expiresAt > SigningLimits.latestExpiry {
            throw SigningError(.invalidExpiry, "expiry \(expiresAt) is after the year 9999; give a nearer time")
        }
        if let startsAt = request.startsAt, startsAt >= expiresAt {
            throw SigningError(.invalidExpiry, "starts_at \(startsAt) is not before the expiry \(expiresAt); a link must start before it ends")
        }
        if let maximum = limits.maximumLifetime, expiresAt - now > maximum {
            throw SigningError(.ttlTooLong, "the link would live \(Durations.describe(expiresAt - now)); this signer allows at most \(Durations.describe(maximum))")
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

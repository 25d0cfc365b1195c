import CFSignSync
import CFSignCore
import CFSignCrypto
import Synchronization

/// The public keys the edge trusts, by CloudFront key id (the distribution's trusted key group).
/// Swapped whole when the key group in Redis changes; each request checks against one snapshot.
public final class TrustedKeys: Sendable {
    private let state: Locked<LinkVerifier>

    public init(_ keys: [String: PublicKey] = [:]) {
        state = Locked(LinkVerifier(keys: keys))
    }

    public var verifier: LinkVerifier { state.withLock { $0 } }

    public var ids: [String] { state.withLock { $0.keys.keys.sorted() } }

    public func replace(_ keys: [String: PublicKey]) {
        state.withLock { $0 = LinkVerifier(keys: keys) }
    }
}

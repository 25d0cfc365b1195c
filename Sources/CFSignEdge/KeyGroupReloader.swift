import CFSignSync
import CFSignCore
import CFSignCrypto
import CFSignRedis
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// `--keygroup-from-redis`: trusts the public keys of `{NS}:keygroup` and re-reads it every few
/// seconds on its own thread, so a rotation (`cfsign keygroup rotate`) shows up at the edge.
///
/// Each key's `public_key_pem` is used when the group has one (that is what CloudFront holds);
/// otherwise the public half of its private key (`private_key_file` or `private_key_pem`).
public final class KeyGroupReloader: Service, Sendable {
    private let url: RedisURL
    private let namespace: Namespace
    private let keys: TrustedKeys
    private let interval: Double
    private let logger: Logger
    private let stopping = Atomic<Bool>(false)
    private let lastSeen = Locked<[UInt8]?>(nil)
    private let redisDown = Atomic<Bool>(false)
    private let kms: (any KMSKeyLoader)?

    /// - Parameter kms: asks AWS KMS for the public key of a group's `awskms:` keys; nil: such keys
    ///   are reported as problems and not trusted.
    public init(url: RedisURL, namespace: Namespace, keys: TrustedKeys, interval: Double, logger: Logger, kms: (any KMSKeyLoader)? = nil) {
        self.kms = kms
        self.url = url
        self.namespace = namespace
        self.keys = keys
        self.interval = interval
        self.logger = logger
    }

    /// The first read, before the edge listens. Throws when Redis cannot be reached; a missing or
    /// broken group is logged and leaves no key trusted (every signed request is then refused).
    ///
    /// On a thread of its own, like the reloads: the Redis calls block, and a group's KMS keys are
    /// loaded by waiting for a task that itself needs a cooperative thread (on a one-core host the
    /// pool has one, and waiting on it would never end).
    public func loadInitial() async throws(RedisError) {
        let result: Result<Void, RedisError> = await withCheckedContinuation { continuation in
            NamedThread.start("cfsign-kg-load") { [self] in
                continuation.resume(returning: Result { () throws(RedisError) in try self.loadInitialBlocking() })
            }
        }
        try result.get()
    }

    private func loadInitialBlocking() throws(RedisError) {
        var route = RedisRoute(url: url)
        let connection = try route.connect(probe: ["GET", namespace.keyGroup], connectTimeout: 5, commandTimeout: 5)
        try check(connection)
    }

    /// As a `Service`: reloads on its own thread (blocking Redis calls stay off the cooperative
    /// pool) until graceful shutdown or cancellation.
    public func run() async throws {
        start()
        try? await gracefulShutdown()
        stop()
    }

    /// Starts the reload thread; it ends soon after `stop()`.
    public func start() {
        NamedThread.start("cfsign-keygroup") { [self] in self.reloadLoop() }
    }

    public func stop() { stopping.store(true, ordering: .relaxed) }

    private func reloadLoop() {
        var connection: RedisConnection?
        // The worker's route: Sentinels are asked for the master on each connect, and a Cluster
        // `MOVED` reply is followed to the node that owns the namespace's slot.
        var route = RedisRoute(url: url)
        while !stopping.load(ordering: .relaxed) {
            let deadline = Date().addingTimeInterval(interval)
            while Date() < deadline && !stopping.load(ordering: .relaxed) { Thread.sleep(forTimeInterval: min(0.2, interval)) }
            if stopping.load(ordering: .relaxed) { break }
            do throws(RedisError) {
                if connection == nil || connection!.isBroken {
                    connection = try route.connect(probe: ["GET", namespace.keyGroup], connectTimeout: 2, commandTimeout: 5)
                }
                try check(connection!)
                if redisDown.exchange(false, ordering: .relaxed) {
                    logger.notice("Redis is reachable again; watching the key group", metadata: ["redis": "\(url)"])
                }
            } catch {
                connection = nil
                _ = route.note(error)
                if !redisDown.exchange(true, ordering: .relaxed) {
                    logger.warning("cannot read the key group from Redis; still trusting the keys loaded before", metadata: [
                        "redis": "\(url)", "error": "\(error.message)", "trusted": "\(keys.ids.joined(separator: ","))",
                    ])
                }
            }
        }
    }

    private func check(_ connection: RedisConnection) throws(RedisError) {
        let reply = try connection.command(["GET", namespace.keyGroup])
        if let e = reply.errorMessage { throw RedisError(.server, "GET \(namespace.keyGroup): \(e)") }
        let bytes = reply.bytes
        let changed = lastSeen.withLock { last -> Bool in
            if last == bytes && bytes != nil { return false }
            if last == nil && bytes == nil && !keys.ids.isEmpty { return false }
            last = bytes
            return true
        }
        guard changed else { return }
        guard let bytes else {
            if keys.ids.isEmpty {
                logger.warning("no key group in Redis yet; every signed request is refused (unknown key) until one is stored with cfsign keygroup set", metadata: ["key": "\(namespace.keyGroup)"])
            } else {
                logger.warning("the key group is gone from Redis; still trusting the keys loaded before", metadata: ["key": "\(namespace.keyGroup)", "trusted": "\(keys.ids.joined(separator: ","))"])
            }
            return
        }
        let document: KeyGroupDocument
        do { document = try KeyGroupDocument(json: bytes) } catch {
            logger.error("the key group in Redis is not valid; still trusting the keys loaded before", metadata: [
                "key": "\(namespace.keyGroup)", "reason": "\(error.reason)", "trusted": "\(keys.ids.joined(separator: ","))",
            ])
            return
        }
        let (loaded, problems) = Self.publicKeys(of: document, kms: kms)
        for problem in problems {
            logger.error("a key of the key group cannot be trusted", metadata: ["version": "\(document.version)", "reason": "\(problem)"])
        }
        if loaded.isEmpty && !keys.ids.isEmpty {
            logger.error("no key of key group version \(document.version) could be loaded; still trusting the keys loaded before", metadata: ["trusted": "\(keys.ids.joined(separator: ","))"])
            return
        }
        let before = keys.ids
        keys.replace(loaded)
        logger.notice("trusting key ids \(loaded.keys.sorted().joined(separator: ", ")) (key group version \(document.version))", metadata: [
            "previous": "\(before.isEmpty ? "none" : before.joined(separator: ","))",
        ])
    }

    /// The public key of each key of the group, and a sentence for each key that could not be loaded.
    public static func publicKeys(of document: KeyGroupDocument, kms: (any KMSKeyLoader)? = nil) -> (keys: [String: PublicKey], problems: [String]) {
        var keys: [String: PublicKey] = [:]
        var problems: [String] = []
        for key in document.keys {
            do throws(KeyError) {
                if let pem = key.publicKeyPEM {
                    keys[key.id] = try PublicKey(pem: Array(pem.utf8), source: "key \(key.id): public_key_pem")
                    continue
                }
                let privateKey: PrivateKey
                switch key.source {
                case .file(let path):
                    privateKey = try PrivateKey.load(file: path)
                case .inlinePEM(let text):
                    privateKey = try PrivateKey(pem: Array(text.utf8), source: "key \(key.id): private_key_pem")
                case .pkcs11, .awsKMS:
                    // The token or KMS reports the public key; the edge never signs.
                    let options = KeyLoadOptions(allowInlineKeys: true, allowGroupReadableKeyFiles: true, kms: kms)
                    keys[key.id] = try SigningKeyGroup.loadKey(key.source, id: key.id, options: options).publicKey
                    continue
                }
                keys[key.id] = try PublicKey(pem: Array(privateKey.publicKeyPEM.utf8), source: "key \(key.id)")
            } catch {
                problems.append("key \(key.id): \(error.description)")
            }
        }
        return (keys, problems)
    }
}

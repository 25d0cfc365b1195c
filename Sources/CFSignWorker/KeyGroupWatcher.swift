import CFSignCore
import CFSignCrypto
import CFSignRedis
import Dispatch
import Foundation
import Logging

/// The key-group thread: SUBSCRIBE to `{NS}:keygroup:changed` on its own connection and re-read
/// `{NS}:keygroup` on every message and every poll interval, so a lost message only delays rotation.
/// A new group is loaded completely here, off the signing path, then swapped in at once; a group
/// that does not load is refused whole and the worker keeps the group it has.
final class KeyGroupWatcher {
    private let configuration: WorkerConfiguration
    private let kms: (any KMSKeyLoader)?
    private let state: WorkerState
    private let logger: Logger
    private let heartbeatWake: DispatchSemaphore
    private let subscriber: ConnectionKeeper
    private let reader: ConnectionKeeper
    private var acceptedBytes: [UInt8]?
    private var reportedMissing = false

    init(configuration: WorkerConfiguration, kms: (any KMSKeyLoader)?, state: WorkerState, logger: Logger, heartbeatWake: DispatchSemaphore) {
        self.configuration = configuration
        self.kms = kms
        self.state = state
        self.logger = logger
        self.heartbeatWake = heartbeatWake
        self.subscriber = ConnectionKeeper(role: "keygroup-subscribe", configuration: configuration, state: state, logger: logger)
        self.reader = ConnectionKeeper(role: "keygroup-read", configuration: configuration, state: state, logger: logger)
    }

    /// Reads and loads the group once (at start-up, before jobs are taken).
    func loadInitial() {
        try? checkWithReader()
    }

    func run() {
        // The connection that is subscribed: the keeper may hand out a new one without an error
        // here (after a Sentinel failover it reconnects to the new master), which must subscribe too.
        var subscribed: RedisConnection?  // held, so a new connection never reuses its identity
        var lastCheck = Date()
        while state.isRunning {
            guard let sub = subscriber.connection(giveUp: { !state.isRunning }) else { return }
            do throws(RedisError) {
                if subscribed !== sub {
                    try sub.subscribe([configuration.namespace.keyGroupChanged])
                    subscribed = sub
                    try checkWithReader()  // read after subscribing, so no change falls between
                    lastCheck = Date()
                }
                // Wake at least twice a second so a stopping worker is not held up.
                let wait = min(0.5, max(0, configuration.keyGroupPollInterval - Date().timeIntervalSince(lastCheck)))
                if let message = try sub.nextMessage(timeout: wait) {
                    logger.debug("key group change announced", metadata: ["version": "\(String(decoding: message.payload, as: UTF8.self))"])
                    try checkWithReader()
                    lastCheck = Date()
                } else if Date().timeIntervalSince(lastCheck) >= configuration.keyGroupPollInterval {
                    try checkWithReader()
                    lastCheck = Date()
                }
            } catch {
                subscribed = nil
                subscriber.failed(error, doing: "watching the key group")
            }
        }
        subscriber.close()
        reader.close()
    }

    /// A MOVED reply (Redis Cluster: the seed node does not own the namespace's slot) is followed
    /// at once, so the group is read before the first job even through a seed node.
    private func checkWithReader() throws(RedisError) {
        for _ in 0..<3 {
            guard let connection = reader.connection(giveUp: { !state.isRunning }) else { return }
            do {
                try check(connection)
                return
            } catch {
                reader.failed(error, doing: "reading the key group")
                if error.kind != .moved { return }
            }
        }
    }

    /// GET the group; load and swap it in if it is new and loads completely, else record why not.
    private func check(_ connection: RedisConnection) throws(RedisError) {
        let reply = try connection.command(["GET", configuration.namespace.keyGroup])
        if let e = reply.errorMessage {
            refuse(version: nil, reason: "cannot read \(configuration.namespace.keyGroup): \(e)")
            return
        }
        guard let bytes = reply.bytes else {
            if !reportedMissing {
                reportedMissing = true
                if let g = state.keyGroup {
                    logger.warning("the key group key is gone; still signing with the group in use", metadata: ["key": "\(configuration.namespace.keyGroup)", "version": "\(g.version)"])
                } else {
                    logger.warning("no key group yet; jobs are answered with no_signing_key until an operator stores one (cfsign keygroup set)", metadata: ["key": "\(configuration.namespace.keyGroup)"])
                }
            }
            return
        }
        reportedMissing = false
        // The stored group is (again) the one in use: an earlier refusal no longer applies.
        if bytes == acceptedBytes { clearRefusal(); return }
        let document: KeyGroupDocument
        do {
            document = try KeyGroupDocument(json: bytes)
        } catch {
            refuse(version: Self.versionHint(bytes), reason: error.reason)
            return
        }
        if let current = state.keyGroup {
            if document == current.document { acceptedBytes = bytes; clearRefusal(); return }
            guard document.version > current.version else {
                refuse(version: document.version, reason: "version \(document.version) is not higher than version \(current.version) in use; versions only grow (cfsign keygroup set picks the next one)")
                return
            }
        }
        var options = KeyLoadOptions(allowInlineKeys: configuration.allowInlineKeys, allowGroupReadableKeyFiles: configuration.allowGroupReadableKeys,
                                     kmsCallTimeout: configuration.kmsCallTimeout, kms: kms)
        options.pkcs11Modules = configuration.pkcs11Modules
        do {
            let group = try SigningKeyGroup.load(document, options: options)
            let previous = state.keyGroup?.version
            state.swapIn(group)
            acceptedBytes = bytes
            logger.notice("key group swapped in", metadata: ["version": "\(group.version)", "previous": "\(previous.map(String.init) ?? "none")", "active": "\(group.activeID)", "keys": "\(group.keyIDs.joined(separator: ","))"])
            heartbeatWake.signal()
            if configuration.pkcs11Modules == nil, document.keys.contains(where: { if case .pkcs11 = $0.source { true } else { false } }) {
                logger.warning("pkcs11_modules is not set: this worker loads any PKCS#11 module a key group's module-path names; list the modules it may load", metadata: ["version": "\(group.version)"])
            }
        } catch {
            refuse(version: document.version, reason: error.reason)
        }
    }

    private func clearRefusal() {
        if state.clearRefusal() {
            logger.notice("the stored key group is the one in use again; refusal cleared")
            heartbeatWake.signal()
        }
    }

    private func refuse(version: Int64?, reason: String) {
        if state.refuse(WorkerState.Refusal(version: version, reason: reason)) {
            let metadata: Logger.Metadata = ["version": "\(version.map(String.init) ?? "unknown")", "reason": "\(reason)"]
            if let inUse = state.keyGroup {
                logger.error("key group refused; still signing with the group in use", metadata: metadata.merging(["in_use": "\(inUse.version)"]) { a, _ in a })
            } else {
                logger.error("key group refused; this worker has no group to sign with: jobs are answered no_signing_key until a valid group is stored (cfsign keygroup set)", metadata: metadata)
            }
            heartbeatWake.signal()
        }
    }

    /// The `version` of a document that failed to load, if it has a readable one.
    static func versionHint(_ bytes: [UInt8]) -> Int64? {
        guard let value = try? JSONReader.parse(bytes), case .integer(let v)? = value[member: "version"] else { return nil }
        return v
    }
}

@_spi(Fuzzing) import CFSignCore
import CFSignCrypto
@_spi(Fuzzing) import CFSignWorker
import FuzzSupport

/// The whole worker path, not only the parser: raw job bytes → outcome → the reply or dead entry
/// the reply stage would push, with counters, metrics, audit fields and the heartbeat document.
/// The first input byte picks the worker: no signing policy, or a policy with path rules, prefix
/// lifetimes and expiry rounding. Invariants: nothing traps; a reply goes to `{NS}:reply:*` and
/// is a JSON object with the job's id; a signed reply passes the producer's `ReplyCheck` for the
/// job it answers; a dead entry is JSON whose job excerpt is at most 1 KiB.
private let now: Int64 = 1_800_000_000

/// libFuzzer calls the target from one thread, and the harness (like the reply stage it stands
/// for) is used by one thread at a time.
nonisolated(unsafe) private let harnesses: [JobPathHarness] = {
    let key = try! PrivateKey.generate(.ecP256)
    let pem = String(decoding: key.privateKeyPEM(), as: UTF8.self)
    let document = try! KeyGroupDocument(version: 1, active: "KFUZZ", keys: [.init(id: "KFUZZ", source: .inlinePEM(pem))])
    let group = try! SigningKeyGroup.load(document, options: KeyLoadOptions(allowInlineKeys: true))
    var open = WorkerConfiguration()
    open.signatureCacheSize = 64
    var strict = open
    strict.rules = SigningRules(allowedHosts: ["d111111abcdef8.cloudfront.net"], allowedPathPrefixes: ["/invoices/", "/media/"],
                                prefixLifetimes: [("/invoices/", 86400), ("/media/", 3600)], wildcards: .withinPrefix)
    strict.expiryRounding = 3600
    strict.maximumLifetime = 30 * 86400
    return [JobPathHarness(configuration: open, keyGroup: group), JobPathHarness(configuration: strict, keyGroup: group)]
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let harness = harnesses[Int(data[0]) % harnesses.count]
    let raw = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    let namespace = harness.configuration.namespace
    switch harness.answer(raw, now: now) {
    case .dead(let entry):
        guard entry.isEmpty || FuzzingEntryPoints.parseJSON(entry).map({ d in
            if case .string(let job)? = d[member: "job"] { return job.utf8.count <= ReplyEncoder.deadJobExcerpt * 3 } else { return false }
        }) == true else {
            fatalError("dead entry is not the contract's: \(String(decoding: entry, as: UTF8.self))")
        }
    case .reply(let replyTo, let payload):
        guard replyTo.utf8.starts(with: namespace.replyPrefix.utf8) else { fatalError("reply to \(replyTo), outside \(namespace.replyPrefix)") }
        guard let reply = FuzzingEntryPoints.parseJSON(payload), case .string? = reply[member: "id"], case .bool(let ok)? = reply[member: "ok"] else {
            fatalError("reply is not the contract's: \(String(decoding: payload, as: UTF8.self))")
        }
        guard ok else { return 0 }
        guard case .job(let job) = JobParser.parse(raw, namespace: namespace) else { fatalError("signed a job the parser refuses") }
        guard case .integer(let expiresAt)? = reply[member: "expires_at"], case .string(let keyID)? = reply[member: "key_id"] else {
            fatalError("signed reply without expires_at/key_id")
        }
        var url: String?
        var cookies: [(name: String, value: String)]?
        if case .string(let u)? = reply[member: "url"] { url = u }
        if case .object(let members)? = reply[member: "cookies"] {
            cookies = members.compactMap { name, value in if case .string(let s) = value { return (name, s) } else { return nil } }
        }
        if let reason = ReplyCheck.mismatch(url: url, cookies: cookies, expiresAt: expiresAt, keyID: keyID, request: job.request,
                                            askedAt: now, now: now, rounding: harness.configuration.expiryRounding) {
            fatalError("the worker's own reply fails the producer's check (\(reason)): \(String(decoding: payload, as: UTF8.self))")
        }
    }
    return 0
}

@_cdecl("FuzzWorkerPath_main")
public func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv) { data, size in fuzz(data, size) }
}

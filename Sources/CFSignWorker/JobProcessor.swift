import CFSignSync
import CFSignCore
import CFSignCrypto
import Dispatch
import Foundation
import Synchronization
import Tracing

/// What answering one job means: a reply onto its `reply_to`, or an entry on the dead list.
struct Outcome: Sendable {
    enum Kind: Sendable {
        case reply(replyTo: String, payload: [UInt8])
        case dead(entry: [UInt8])
        /// Already in `{NS}:dead`, written there by the take script (a job over 64 KiB): only
        /// counted and audited.
        case deadInRedis
    }
    /// The job's raw bytes, exactly as taken: the reply script removes them from the in-flight list.
    let raw: [UInt8]
    let kind: Kind
    /// nil for a signed job; the error code otherwise (for logs and counters).
    let error: ErrorCode?
    /// From the job's optional `enqueued_at_ms`, for the job-age metric.
    var enqueuedAtMilliseconds: Int64? = nil
    /// What the audit trail records for this job (only built when auditing is on).
    var audit: AuditRecord? = nil
    /// Timestamps and span attributes (only recorded when the worker traces; see `JobSpans`).
    var trace: JobTrace? = nil
}

/// One audit entry: who asked for what, and what they got. Never a signature or key material.
struct AuditRecord: Sendable {
    let id: String
    let replyTo: String
    let url: String
    let resource: String?
    let expiresAt: Int64?
    let keyID: String?
    /// `ok`, or the error code (`dead:<code>` for dead-list jobs).
    let outcome: String

    /// Field/value pairs for XADD or a log line.
    var fields: [(String, String)] {
        var f: [(String, String)] = [("id", id), ("reply_to", replyTo), ("url", url), ("outcome", outcome)]
        if let resource { f.append(("resource", resource)) }
        if let expiresAt { f.append(("expires_at", String(expiresAt))) }
        if let keyID { f.append(("key_id", keyID)) }
        return f
    }
}

/// A job planned for a key that signs remotely (KMS), its signature not in the cache: the sign
/// stage gets the signature in a task and `JobProcessor.finish` makes the outcome.
struct RemoteJob: Sendable {
    let raw: [UInt8]
    let job: Job
    let key: any RemoteSigningKey
    let pending: LinkSigner.PendingLink
    /// The job's record so far (parse, key, when signing began); `finish` notes when the holder
    /// answered, so the span covers the KMS round trip. nil when not tracing.
    var trace: JobTrace? = nil
}

/// What a job became on a signing lane: its outcome, or a remote signature still to get.
enum Step: Sendable {
    case done(Outcome)
    case remote(RemoteJob)
}

/// Turns raw jobs into outcomes: parse, validate, sign. No Redis here; CPU only.
struct JobProcessor: Sendable {
    let namespace: Namespace
    /// `var`: `withRules(of:)` puts in the signing policy in use (it can change live).
    var signer: LinkSigner
    let workerID: String
    let concurrency: Int
    let metrics: WorkerMetrics
    var auditing = false
    /// Signatures by (group version, key, digest, policy); nil when the cache is off.
    var cache: SignatureCache?
    /// Record each job's `JobTrace` (a tracer is bootstrapped); off: no timestamps are taken.
    var tracing = false

    /// One job. Never throws and never traps on bad input: every path ends in an outcome.
    /// - Parameter refusal: why this worker has no group (the stored one was refused), for the
    ///   `no_signing_key` message; nil when no group was stored at all.
    func process(_ raw: [UInt8], group: SigningKeyGroup?, refusal: String? = nil, now: Int64) -> Outcome {
        guard case .done(let outcome) = step(raw, group: group, refusal: refusal, now: now, deferRemote: false) else {
            preconditionFailure("a remote signature was deferred without deferRemote")
        }
        return outcome
    }

    /// One job, except that a job whose key signs remotely (KMS) and whose signature is not in
    /// the cache is handed back as `.remote` after parsing and planning, for the sign stage to
    /// sign in a task (`finish`); with `deferRemote` false it is signed here, waiting for KMS.
    func step(_ raw: [UInt8], group: SigningKeyGroup?, refusal: String? = nil, now: Int64, deferRemote: Bool) -> Step {
        let start = DispatchTime.now().uptimeNanoseconds
        var trace: JobTrace? = tracing ? JobTrace() : nil
        let step = outcome(raw, group: group, refusal: refusal, now: now, deferRemote: deferRemote, trace: &trace)
        var outcome: Outcome
        switch step {
        case .done(let done): outcome = done
        case .remote(var remote):
            // Not signed yet: the signature comes from the holder in a task, and `finish` says when.
            trace?.signEnd = nil
            remote.trace = trace
            return .remote(remote)
        }
        metrics.signDuration.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds - start))
        outcome.trace = trace
        if auditing { outcome.audit = auditRecord(raw, outcome: outcome, group: group) }
        return .done(outcome)
    }

    /// The outcome of a remote job once its holder signed (or failed); `started` is from `DispatchTime`.
    func finish(_ remote: RemoteJob, _ result: Result<[UInt8], SigningError>, group: SigningKeyGroup?, started: UInt64) -> Outcome {
        let job = remote.job
        var trace = remote.trace
        trace?.signEnd = DefaultTracerClock.now
        let payload: [UInt8]
        var error: ErrorCode? = nil
        switch result {
        case .success(let signature):
            payload = ReplyEncoder.success(id: job.id, link: remote.pending.finish(signature))
        case .failure(let e):
            payload = ReplyEncoder.failure(id: job.id, error: e)
            error = e.code
        }
        var outcome = Outcome(raw: remote.raw, kind: .reply(replyTo: job.replyTo, payload: payload), error: error, enqueuedAtMilliseconds: job.enqueuedAtMilliseconds)
        outcome.trace = trace
        metrics.signDuration.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds - started))
        if auditing { outcome.audit = auditRecord(remote.raw, outcome: outcome, group: group) }
        return outcome
    }

    /// Re-reads the job for the audit trail (only when auditing, off the hot path otherwise).
    private func auditRecord(_ raw: [UInt8], outcome: Outcome, group: SigningKeyGroup?) -> AuditRecord {
        let result = outcome.error.map { $0.rawValue } ?? "ok"
        switch JobParser.parse(raw, namespace: namespace) {
        case .dead(let error):
            return AuditRecord(id: "", replyTo: "", url: "", resource: nil, expiresAt: nil, keyID: nil, outcome: "dead:" + error.code.rawValue)
        case .refused(let id, let replyTo, let error):
            return AuditRecord(id: id, replyTo: replyTo, url: "", resource: nil, expiresAt: nil, keyID: nil, outcome: error.code.rawValue)
        case .job(let job):
            var expiresAt: Int64? = nil
            if outcome.error == nil, case .reply(_, let payload) = outcome.kind,
               let reply = try? JSONReader.parse(payload), case .integer(let e)? = reply[member: "expires_at"] {
                expiresAt = e
            }
            let keyID = outcome.error == nil ? (job.request.keyID ?? group?.activeID) : job.request.keyID
            return AuditRecord(id: job.id, replyTo: job.replyTo, url: job.request.url, resource: job.request.resource,
                               expiresAt: expiresAt, keyID: keyID, outcome: result)
        }
    }

    private func outcome(_ raw: [UInt8], group: SigningKeyGroup?, refusal: String?, now: Int64, deferRemote: Bool, trace: inout JobTrace?) -> Step {
        var context: TraceContext? = nil
        let intake = trace == nil ? JobParser.parse(raw, namespace: namespace) : JobParser.parse(raw, namespace: namespace, trace: &context)
        trace?.context = context
        switch intake {
        case .dead(let error):
            let entry = ReplyEncoder.dead(error: error, job: raw, worker: workerID, atMilliseconds: Self.milliseconds())
            return .done(Outcome(raw: raw, kind: .dead(entry: entry), error: error.code))
        case .refused(let id, let replyTo, let error):
            trace?.jobID = id
            return .done(Outcome(raw: raw, kind: .reply(replyTo: replyTo, payload: ReplyEncoder.failure(id: id, error: error)), error: error.code))
        case .job(let job):
            trace?.jobID = job.id
            // Optional chaining: with tracing off the clock is not read at all.
            trace?.signStart = DefaultTracerClock.now
            defer { trace?.signEnd = DefaultTracerClock.now }
            do throws(SigningError) {
                guard let group else {
                    if let refusal {
                        throw SigningError(.noSigningKey, "this worker has no key group to sign with: the one stored in \(namespace.keyGroup) was refused (\(refusal)); an operator must store a valid one (cfsign keygroup set)")
                    }
                    throw SigningError(.noSigningKey, "this worker has no key group yet; an operator must store one in \(namespace.keyGroup) (cfsign keygroup set)")
                }
                let (keyID, key) = try group.key(for: job.request.keyID)
                if trace != nil {
                    trace?.keyID = keyID
                    trace?.keyLocation = key.location.kind
                    trace?.keyAlgorithm = key.type.rawValue
                    trace?.hash = (job.request.hash ?? (key.signableHashes.contains(signer.limits.defaultHash) ? signer.limits.defaultHash : .sha256)).rawValue
                }
                let link: SignedLink
                if deferRemote, let remote = key.remote {
                    switch try signer.prepare(job.request, key: key, keyID: keyID, now: now, cache: cache, cacheScope: group.version) {
                    case .signed(let cached): link = cached
                    case .needsSignature(let pending): return .remote(RemoteJob(raw: raw, job: job, key: remote, pending: pending))
                    }
                } else {
                    link = try signer.sign(job.request, key: key, keyID: keyID, now: now, cache: cache, cacheScope: group.version)
                }
                return .done(Outcome(raw: raw, kind: .reply(replyTo: job.replyTo, payload: ReplyEncoder.success(id: job.id, link: link)), error: nil, enqueuedAtMilliseconds: job.enqueuedAtMilliseconds))
            } catch {
                return .done(Outcome(raw: raw, kind: .reply(replyTo: job.replyTo, payload: ReplyEncoder.failure(id: job.id, error: error)), error: error.code, enqueuedAtMilliseconds: job.enqueuedAtMilliseconds))
            }
        }
    }

    /// A job the take script dead-lettered inside Redis for its size.
    func oversized(_ job: OversizedJob) -> Outcome {
        var outcome = Outcome(raw: [], kind: .deadInRedis, error: .invalidJob)
        if auditing {
            outcome.audit = AuditRecord(id: "", replyTo: "", url: "", resource: nil, expiresAt: nil, keyID: nil, outcome: "dead:" + ErrorCode.invalidJob.rawValue)
        }
        return outcome
    }

    /// A batch, signed concurrently on Dispatch with `concurrency` lanes; outcomes in job order.
    func process(batch: [[UInt8]], group: SigningKeyGroup?, refusal: String? = nil) -> [Outcome] {
        steps(batch: batch, group: group, refusal: refusal, deferRemote: false).map { step in
            guard case .done(let outcome) = step else { preconditionFailure("a remote signature was deferred without deferRemote") }
            return outcome
        }
    }

    /// A batch on the lanes as `process(batch:)`, remote-key jobs left `.remote` when `deferRemote`.
    func steps(batch: [[UInt8]], group: SigningKeyGroup?, refusal: String? = nil, deferRemote: Bool) -> [Step] {
        let now = Int64(Date().timeIntervalSince1970)
        if batch.count == 1 || concurrency == 1 {
            return batch.map { step($0, group: group, refusal: refusal, now: now, deferRemote: deferRemote) }
        }
        let lanes = min(concurrency, batch.count)
        // Each lane signs every lanes-th job and hands its results over once, under one lock.
        let collected = Locked<[Step?]>(Array(repeating: nil, count: batch.count))
        DispatchQueue.concurrentPerform(iterations: lanes) { lane in
            var mine: [(Int, Step)] = []
            mine.reserveCapacity(batch.count / lanes + 1)
            var i = lane
            while i < batch.count {
                mine.append((i, step(batch[i], group: group, refusal: refusal, now: now, deferRemote: deferRemote)))
                i += lanes
            }
            collected.withLock { all in for (index, step) in mine { all[index] = step } }
        }
        return collected.withLock { $0.map { $0! } }
    }

    static func milliseconds() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }
}


extension JobProcessor {
    /// This processor with the signing policy in use now (`ConfigFileReloader` can change it):
    /// every place that validates jobs (the sign stage, and the retries of held jobs, local or
    /// remote) takes it from here, so none judges a job by a policy already replaced.
    func withRules(of state: WorkerState) -> JobProcessor {
        let rules = state.signingRules
        guard rules != signer.rules else { return self }
        var updated = self
        updated.signer = LinkSigner(limits: signer.limits, rules: rules)
        return updated
    }
}

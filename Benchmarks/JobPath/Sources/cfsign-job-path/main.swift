import CFSignCore
import CFSignCrypto
import Foundation

/// usage: cfsign-job-path KEY.pem [JOBS] [ROUNDS]
///
/// Jobs byte for byte like `../shared/bench/loadgen.py drain --kind canned` (unique URLs), through
/// the worker's own calls: `JobParser.parse`, `LinkSigner.prepare` (plan, policy, cache lookup),
/// the signature, `PendingLink.finish` (cache insert, URL), `ReplyEncoder.success`. Per round it
/// prints, by this thread's CPU clock:
/// - each stage alone, every job through one stage before the next (warm caches: a floor);
/// - the job path interleaved as the worker runs it, with the signature replaced by a fixed byte
///   string ("around": everything the worker adds to a signature, minus Redis and threads);
/// - the signature alone over the same policies, and the ratio signature ÷ (signature + around),
///   the in-process ceiling of `scripts/bench --bracketed`'s ratio.
func threadCPU() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
}

let arguments = CommandLine.arguments
guard arguments.count >= 2 else {
    FileHandle.standardError.write(Data("usage: cfsign-job-path KEY.pem [JOBS, default 20000] [ROUNDS, default 5]\n".utf8))
    exit(2)
}
let key = try PrivateKey.load(file: arguments[1])
let count = arguments.count > 2 ? Int(arguments[2]) ?? 20000 : 20000
let rounds = arguments.count > 3 ? Int(arguments[3]) ?? 5 : 5
let namespace = Namespace.default
let started = Date().timeIntervalSince1970
let jobs: [[UInt8]] = (0..<count).map { i in
    Array(#"{"id": "\#(i):\#(started)", "reply_to": "{cfsign}:reply:bench-12345", "url": "https://d111111abcdef8.cloudfront.net/invoices/\#(i).pdf?tenant=\#(i % 97)", "expires_in": 86400}"#.utf8)
}
let signer = LinkSigner(limits: SigningLimits(maximumLifetime: nil))
let now = Int64(started)
let placeholder = [UInt8](repeating: 0x30, count: key.type == .ecP256 ? 71 : 256)
func perJob(_ seconds: Double) -> String { String(format: "%.2f", seconds / Double(count) * 1e6) }

for round in 1...rounds {
    // Each round signs at a later `now`, so the cache (the worker's default size, 4,096) never
    // hits, and once full every insert evicts, as in a drain of unique URLs.
    let at = now + Int64(round)
    let cache = SignatureCache(capacity: 4096)
    var t = threadCPU()
    let parsed: [Job] = jobs.map { raw in
        guard case .job(let job) = JobParser.parse(raw, namespace: namespace) else { fatalError("a bench job was refused") }
        return job
    }
    let parse = threadCPU() - t
    t = threadCPU()
    let pending: [LinkSigner.PendingLink] = try parsed.map { job in
        guard case .needsSignature(let p) = try signer.prepare(job.request, key: key, keyID: "KBENCH", now: at, cache: cache, cacheScope: 1) else { fatalError("cache hit") }
        return p
    }
    let prepare = threadCPU() - t
    t = threadCPU()
    let signatures = try pending.map { try key.sign($0.policy, hash: $0.hash) }
    let sign = threadCPU() - t
    t = threadCPU()
    let links = zip(pending, signatures).map { $0.finish($1) }
    let finish = threadCPU() - t
    t = threadCPU()
    var bytes = 0
    for (job, link) in zip(parsed, links) { bytes &+= ReplyEncoder.success(id: job.id, link: link).count }
    let reply = threadCPU() - t

    let cache2 = SignatureCache(capacity: 4096)
    t = threadCPU()
    for raw in jobs {
        guard case .job(let job) = JobParser.parse(raw, namespace: namespace),
              case .needsSignature(let p) = try signer.prepare(job.request, key: key, keyID: "KBENCH", now: at, cache: cache2, cacheScope: 1)
        else { fatalError("a bench job was refused") }
        bytes &+= ReplyEncoder.success(id: job.id, link: p.finish(placeholder)).count
    }
    let around = threadCPU() - t
    print("round \(round): stages alone (µs/job): parse \(perJob(parse)), prepare \(perJob(prepare)), finish \(perJob(finish)), reply \(perJob(reply)); "
        + "interleaved: around the signature \(perJob(around)), signature \(perJob(sign)), ratio \(String(format: "%.2f", sign / (sign + around)))")
    // The replies' bytes are used, so the optimiser cannot drop the work that made them.
    if bytes == 0 { print("no reply bytes") }
}

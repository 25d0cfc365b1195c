@_spi(Fuzzing) import CFSignCore
import FuzzSupport

private let namespace = try! Namespace("cfsign")

/// Any bytes as a job: the parser must never trap, and whatever it answers must encode.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    switch JobParser.parse(bytes, namespace: namespace) {
    case .dead(let error):
        _ = ReplyEncoder.dead(error: error, job: bytes, worker: "fuzz", atMilliseconds: 0)
    case .refused(let id, _, let error):
        _ = ReplyEncoder.failure(id: id, error: error)
    case .job(let job):
        if let plan = try? SigningPlan(job.request, now: 1_800_000_000, limits: SigningLimits(maximumLifetime: nil)) {
            let policy = plan.policy.bytes
            // The policy must be JSON that reads back to the same resource.
            guard let doc = FuzzingEntryPoints.parseJSON(policy), case .array(let s)? = doc[member: "Statement"],
                  case .string(let r)? = s.first?[member: "Resource"], r == plan.policy.resource else {
                fatalError("policy bytes do not read back: \(String(decoding: policy, as: UTF8.self))")
            }
        }
    }
    return 0
}

@_cdecl("FuzzJobParser_main")
public func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv) { data, size in fuzz(data, size) }
}

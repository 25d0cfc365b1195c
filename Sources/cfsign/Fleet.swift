import CFSignAdmin
import CFSignCore

extension FleetSnapshot.Problem {
    /// The sentence `cfsign status` prints (stderr, exit 1) and puts in its JSON `problem`.
    func message(_ ns: Namespace) -> String {
        switch self {
        case .noLiveWorker:
            return "no live worker on namespace \(ns); start one with cfsign worker --namespace \(ns)"
        case .refusal(let worker, let r, let others):
            return "worker \(worker) refused key-group version \(r.version.map(String.init) ?? "?"): \(r.reason)"
                + (others > 0 ? " (and \(others) more worker(s) report a refusal)" : "")
        case .noKeyGroup:
            return "no key group stored in \(ns.keyGroup); an operator must store one (cfsign keygroup set)"
        case .unreadableStoredVersion:
            return "the key group stored in \(ns.keyGroup) has no readable version; store a valid one (cfsign keygroup set)"
        case .behind(let count, let live, let stored, let first, let firstVersion):
            return "\(count) of \(live) live worker(s) do not sign with the stored key-group version \(stored) (\(first) signs with \(firstVersion.map(String.init) ?? "none")); they may still be loading it, or refuse it"
        }
    }
}

import CFSignCore
import Metrics

/// The worker's metrics, made once at start-up through swift-metrics; the executable decides the
/// backend (Prometheus on `/metrics`). Every name starts with `cfsign_` (CLI.md).
final class WorkerMetrics: Sendable {
    /// `cfsign_jobs_total{outcome="ok"}`, counted when the reply is pushed.
    let signed: Counter
    /// `cfsign_jobs_total{outcome="error",code=...}`: answered with an error reply.
    let refused: [ErrorCode: Counter]
    /// `cfsign_jobs_total{outcome="dead",code=...}`: sent to the dead list.
    let dead: [ErrorCode: Counter]
    /// `cfsign_stale_replies_total`: replies the reply script refused because this worker no
    /// longer held the job (it stalled past its heartbeat and the job was requeued).
    let staleReplies: Counter
    /// Parse + validate + sign of one job.
    let signDuration: Timer
    /// Enqueue to reply, for jobs that carry `enqueued_at_ms`.
    let jobAge: Timer
    let batchSize: Recorder
    let queueDepth: Gauge
    let inflight: Gauge
    let deadListLength: Gauge
    let reconnects: Counter
    let keyGroupVersion: Gauge
    let keyGroupRefusals: Counter
    /// 1 while the stored key group is refused, else 0.
    let keyGroupRefused: Gauge
    /// This worker's clock minus Redis's (seconds).
    let clockSkew: Gauge
    /// 1 when Redis's maxmemory-policy may evict keys (jobs could vanish), else 0.
    let redisEvicting: Gauge

    init() {
        signed = Counter(label: "cfsign_jobs_total", dimensions: [("outcome", "ok"), ("code", "")])
        var refused: [ErrorCode: Counter] = [:]
        var dead: [ErrorCode: Counter] = [:]
        for code in ErrorCode.known {
            refused[code] = Counter(label: "cfsign_jobs_total", dimensions: [("outcome", "error"), ("code", code.rawValue)])
        }
        // Only these codes send a job to the dead list (its id or reply_to cannot be used).
        for code in [ErrorCode.invalidJob, .missingField, .poisonJob] {
            dead[code] = Counter(label: "cfsign_jobs_total", dimensions: [("outcome", "dead"), ("code", code.rawValue)])
        }
        self.refused = refused
        self.dead = dead
        staleReplies = Counter(label: "cfsign_stale_replies_total")
        signDuration = Timer(label: "cfsign_sign_duration_seconds")
        jobAge = Timer(label: "cfsign_job_age_seconds")
        batchSize = Recorder(label: "cfsign_batch_size")
        queueDepth = Gauge(label: "cfsign_queue_depth")
        inflight = Gauge(label: "cfsign_inflight_jobs")
        deadListLength = Gauge(label: "cfsign_dead_list_length")
        reconnects = Counter(label: "cfsign_redis_reconnects_total")
        keyGroupVersion = Gauge(label: "cfsign_keygroup_version")
        keyGroupRefusals = Counter(label: "cfsign_keygroup_refusals_total")
        keyGroupRefused = Gauge(label: "cfsign_keygroup_refused")
        clockSkew = Gauge(label: "cfsign_clock_skew_seconds")
        redisEvicting = Gauge(label: "cfsign_redis_evicting")
    }
}


import CFSignRedis
import Foundation
import Logging

/// One thread's Redis connection, re-opened with capped, jittered backoff when it is lost.
///
/// With Sentinel every new connection asks the Sentinels for the master, so a failover is
/// followed on the next reconnect. With Redis Cluster a `MOVED` reply (any command) sends the
/// next connection straight to the node it names, without a pause (`RedisRoute`); a namespace
/// lives in one slot, so that one node serves everything this thread does.
///
/// Not Sendable, like the connection it holds: each worker thread has its own keeper.
final class ConnectionKeeper {
    private let role: String
    private let configuration: WorkerConfiguration
    private let state: WorkerState
    private let logger: Logger
    private var connection: RedisConnection?
    private var route: RedisRoute
    private var backoff = Backoff(initial: 0.05, maximum: 5)
    private var hasConnected = false
    private var isDown = false
    /// Set after a MOVED: the next connect follows it (not a reconnect after a loss).
    private var following = false
    /// MOVED replies since a connection was last used without one: a loop between nodes (a
    /// cluster mid-reconfiguration) is slowed down by the backoff after a few.
    private var moves = 0
    /// `state.redisMasterEpoch` when this connection was opened.
    private var epoch = 0

    init(role: String, configuration: WorkerConfiguration, state: WorkerState, logger: Logger) {
        self.role = role
        self.configuration = configuration
        self.state = state
        self.logger = logger
        self.route = RedisRoute(url: configuration.redis)
    }

    /// A live connection; waits and retries while Redis is unreachable. Returns nil as soon as
    /// `giveUp()` says the caller no longer needs one.
    func connection(giveUp: () -> Bool) -> RedisConnection? {
        while true {
            if let connection, !connection.isBroken {
                if epoch == state.redisMasterEpoch.load(ordering: .relaxed) {
                    moves = 0
                    return connection
                }
                // Still connected to the old master, which a failover has replaced (or demoted).
                logger.notice("the Sentinels name a new master; reconnecting", metadata: ["connection": "\(role)", "redis": "\(connection.label)"])
                self.connection = nil
                following = false
                continue
            }
            if giveUp() { return nil }
            do {
                let currentEpoch = state.redisMasterEpoch.load(ordering: .relaxed)
                let c = try route.connect(connectTimeout: configuration.connectTimeout, commandTimeout: configuration.commandTimeout)
                connection = c
                epoch = currentEpoch
                if following {
                    logger.debug("following a cluster redirect", metadata: ["connection": "\(role)", "redis": "\(c.label)"])
                } else if hasConnected {
                    state.reconnects.add(1, ordering: .relaxed)
                    state.metrics.reconnects.increment()
                    logger.notice("reconnected to Redis", metadata: ["connection": "\(role)", "redis": "\(c.label)"])
                } else {
                    logger.debug("connected to Redis", metadata: ["connection": "\(role)", "redis": "\(c.label)"])
                }
                following = false
                hasConnected = true
                isDown = false
                backoff.reset()
                return c
            } catch {
                following = false
                report(error, doing: "connecting")
                pause()
            }
        }
    }

    /// Drops the connection after an error; the next `connection(giveUp:)` re-opens it after a
    /// pause, or at once on the node a `MOVED` reply named.
    func failed(_ error: RedisError, doing: String) {
        connection = nil
        if route.note(error) {
            moves += 1
            following = true
            if moves == 1 || moves % 10 == 0 {
                logger.notice("the namespace's slot is on another cluster node; connecting there", metadata: [
                    "connection": "\(role)", "while": "\(doing)", "node": "\(error.movedTo.map { "\($0)" } ?? "?")",
                ])
            }
            if moves > 3 { pause() }  // redirected round in circles: the cluster is being reconfigured
            return
        }
        following = false
        report(error, doing: doing)
        pause()
    }

    /// A server error that a new connection will not cure: keep the connection, but slow down.
    func serverError(_ message: String, doing: String) {
        if message.hasPrefix("TRYAGAIN") {
            // Redis Cluster is migrating the namespace's slot and this command's keys are split
            // between the nodes: it works again once the slot is handed over (then MOVED).
            logger.debug("Redis Cluster asks to try again (slot migrating)", metadata: ["connection": "\(role)", "while": "\(doing)"])
            Thread.sleep(forTimeInterval: 0.1)
            return
        }
        state.noteError("\(doing): \(message)")
        logger.error("Redis refused \(doing)", metadata: ["connection": "\(role)", "error": "\(message)"])
        pause()
    }

    private func report(_ error: RedisError, doing: String) {
        state.noteError("\(doing): \(error.message)")
        if !isDown {
            // Once per outage, not once per retry.
            logger.warning("lost Redis; retrying with backoff", metadata: ["connection": "\(role)", "while": "\(doing)", "error": "\(error.message)"])
            isDown = true
        }
    }

    private func pause() {
        Thread.sleep(forTimeInterval: backoff.next())
    }

    func close() { connection = nil }
}

import CFSignRedis
import Foundation
import Logging

/// One thread's Redis connection, re-opened with capped, jittered backoff when it is lost.
///
/// Not Sendable, like the connection it holds: each worker thread has its own keeper.
final class ConnectionKeeper {
    private let role: String
    private let configuration: WorkerConfiguration
    private let state: WorkerState
    private let logger: Logger
    private var connection: RedisConnection?
    private var backoff = Backoff(initial: 0.05, maximum: 5)
    private var hasConnected = false
    private var isDown = false

    init(role: String, configuration: WorkerConfiguration, state: WorkerState, logger: Logger) {
        self.role = role
        self.configuration = configuration
        self.state = state
        self.logger = logger
    }

    /// A live connection; waits and retries while Redis is unreachable. Returns nil as soon as
    /// `giveUp()` says the caller no longer needs one.
    func connection(giveUp: () -> Bool) -> RedisConnection? {
        while true {
            if let connection, !connection.isBroken { return connection }
            if giveUp() { return nil }
            do {
                let c = try RedisConnection(url: configuration.redis, connectTimeout: configuration.connectTimeout, commandTimeout: configuration.commandTimeout)
                connection = c
                if hasConnected {
                    state.reconnects.add(1, ordering: .relaxed)
                    state.metrics.reconnects.increment()
                    logger.notice("reconnected to Redis", metadata: ["connection": "\(role)", "redis": "\(configuration.redis)"])
                } else {
                    logger.debug("connected to Redis", metadata: ["connection": "\(role)", "redis": "\(configuration.redis)"])
                }
                hasConnected = true
                isDown = false
                backoff.reset()
                return c
            } catch {
                report(error, doing: "connecting")
                pause()
            }
        }
    }

    /// Drops the connection after an error; the next `connection(giveUp:)` re-opens it after a pause.
    func failed(_ error: RedisError, doing: String) {
        connection = nil
        report(error, doing: doing)
        pause()
    }

    /// A server error that a new connection will not cure: keep the connection, but slow down.
    func serverError(_ message: String, doing: String) {
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

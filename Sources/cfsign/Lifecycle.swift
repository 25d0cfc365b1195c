import Logging
import ServiceLifecycle
import UnixSignals

/// The one owner of SIGTERM and SIGINT for the long-running commands (`worker`, `edge`).
enum Lifecycle {
    /// Runs `services` in one `ServiceGroup`: the first SIGTERM/SIGINT shuts the group down
    /// gracefully (a worker drains), a second one during that shutdown cancels it (a worker
    /// returns at once, leaving held jobs for another worker to requeue).
    ///
    /// The signals are trapped here, before any service starts, and only here: the group is given
    /// no signals of its own. A signal that arrives while the group is still starting is then
    /// still a graceful shutdown (the group remembers one requested before `run`), where two
    /// watchers would leave a gap in which the group had no handler yet. And the group's own
    /// `cancellationSignals` refuse a signal that is also a graceful one, while "send it again to
    /// stop now" needs exactly that.
    static func run(_ services: [ServiceGroupConfiguration.ServiceConfiguration], logger: Logger) async throws {
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint)
        var configuration = ServiceGroupConfiguration(services: services, logger: logger)
        // Bounds the second signal's stop: a service that ignores cancellation cannot hold the
        // process past this (held jobs go back to the queue through the reaper either way).
        configuration.maximumCancellationDuration = .seconds(5)
        let group = ServiceGroup(configuration: configuration)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            tasks.addTask {
                var seen = 0
                for await signal in signals {
                    seen += 1
                    if seen == 1 {
                        logger.notice("\(signal) received: shutting down gracefully (send it again to stop at once)")
                        await group.triggerGracefulShutdown()
                    } else {
                        logger.notice("\(signal) received again: stopping at once")
                        return
                    }
                }
            }
            defer { tasks.cancelAll() }
            try await tasks.next()
        }
    }
}

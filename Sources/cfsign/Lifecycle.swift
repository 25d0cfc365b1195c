import Logging
import ServiceLifecycle
import UnixSignals

/// The one owner of SIGTERM and SIGINT for the long-running commands (`worker`, `edge`).
enum Lifecycle {
    /// Runs `services` in one `ServiceGroup`: the first SIGTERM/SIGINT shuts the group down
    /// gracefully (a worker drains), a second one during that shutdown cancels it (a worker
    /// returns at once, leaving held jobs for another worker to requeue).
    ///
    /// Why not the group's own `cancellationSignals`: it refuses a signal that is also a graceful
    /// shutdown signal, and "press Ctrl-C again to stop now" needs exactly that.
    static func run(_ services: [ServiceGroupConfiguration.ServiceConfiguration], logger: Logger) async throws {
        var configuration = ServiceGroupConfiguration(services: services, logger: logger)
        configuration.gracefulShutdownSignals = [.sigterm, .sigint]
        let group = ServiceGroup(configuration: configuration)
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            tasks.addTask {
                var seen = 0
                for await _ in signals {
                    seen += 1
                    if seen == 2 { return }
                }
            }
            defer { tasks.cancelAll() }
            try await tasks.next()
        }
    }
}

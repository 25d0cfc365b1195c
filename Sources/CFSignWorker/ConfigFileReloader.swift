import Foundation
import Logging
import ServiceLifecycle

/// Takes the live settings (`WorkerConfiguration.liveKeys`: log level, signing policy) from the
/// config file while the worker runs: the file is re-read every `interval` seconds and, when its
/// text changed, put into the file's provider, so the one `ConfigReader` sees the new values with
/// the usual precedence (a flag or `CFSIGN_*` variable still wins over the file).
///
/// Polling rather than SIGHUP or inotify: the lifecycle owns the signals, and a re-read of a
/// small file each second works the same with editors that replace the file and with
/// configuration-management tools that rewrite it in place. A file that does not parse, or whose
/// settings disagree with each other, is not taken: the worker keeps what it has and warns.
public struct ConfigFileReloader: Service {
    let providers: WorkerConfiguration.Providers
    let file: KeyValueFileProvider
    let interval: Double
    let logger: Logger
    /// Called with each new configuration taken; only its live settings are applied.
    let apply: @Sendable (WorkerConfiguration) -> Void

    /// nil when the providers have no file (nothing to reload).
    public init?(providers: WorkerConfiguration.Providers, interval: Double = 1, logger: Logger, apply: @escaping @Sendable (WorkerConfiguration) -> Void) {
        guard let file = providers.file else { return nil }
        self.providers = providers
        self.file = file
        self.interval = interval
        self.logger = logger
        self.apply = apply
    }

    public func run() async throws {
        do {
            try await cancelWhenGracefulShutdown {
                while true {
                    try await Task.sleep(nanoseconds: UInt64(interval * 1_000_000_000))
                    check()
                }
            }
        } catch is CancellationError {}
    }

    /// One look at the file: takes its live settings when it changed.
    public func check() {
        let change: (old: KeyValueFileProvider.Contents, new: KeyValueFileProvider.Contents)?
        do { change = try file.reload() } catch {
            logger.warning("config file not reloaded; the settings in use are kept: \(error.message)")
            return
        }
        guard let (old, new) = change else { return }
        let configuration: WorkerConfiguration
        do { configuration = try providers.configuration() } catch {
            file.restore(old)
            logger.warning("config file not reloaded; the settings in use are kept: \(error.message)")
            return
        }
        let changed = Set(old.entries.keys).union(new.entries.keys).filter { old.entries[$0]?.value != new.entries[$0]?.value }.sorted()
        let restart = changed.filter { !WorkerConfiguration.liveKeys.contains($0) }
        let live = changed.filter { WorkerConfiguration.liveKeys.contains($0) }
        for warning in new.warnings where !old.warnings.contains(warning) { logger.warning("\(warning)") }
        apply(configuration)
        if !live.isEmpty {
            logger.notice("config file reloaded", metadata: [
                "file": "\(file.path)", "changed": "\(live.joined(separator: ","))",
                "log_level": "\(configuration.logLevel)", "signing_policy": "\(configuration.rules.summary)",
            ])
        }
        if !restart.isEmpty {
            logger.warning("config file changed settings that are read only at start; restart the worker to use them", metadata: [
                "file": "\(file.path)", "settings": "\(restart.joined(separator: ","))",
            ])
        }
    }
}

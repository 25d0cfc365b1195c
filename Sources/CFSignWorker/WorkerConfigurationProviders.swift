import CFSignSync
import Configuration
import Foundation

/// The `key = value` config file as a swift-configuration provider.
///
/// swift-configuration's own file providers (`FileProvider`, `ReloadingFileProvider`) read JSON,
/// YAML or property lists, not this format, and every deployment already has `key = value` files;
/// so this small provider parses the file with the worker's own rules (`#` comments, quotes, line
/// numbers in every message) and serves the values through a `MutableInMemoryProvider`, which is
/// also what makes `reload()` visible to every reader (and its watchers) at once.
public final class KeyValueFileProvider: Sendable {
    /// The file as it was last read: each known key's value and the line it came from (the last
    /// line wins, as it always did), and the unknown keys' warnings.
    struct Contents: Sendable, Equatable {
        var entries: [String: Entry] = [:]
        var warnings: [String] = []
        var text = ""
    }

    struct Entry: Sendable, Equatable {
        let value: String
        let line: Int
    }

    public let path: String
    private let values: MutableInMemoryProvider
    private let contents: Locked<Contents>

    /// Reads and checks the file: every value is checked against its setting, in line order, so a
    /// bad line is refused even when the environment or a flag overrides it (as before).
    public init(path: String) throws(ConfigurationError) {
        self.path = path
        let read = try Self.read(path)
        self.contents = Locked(read)
        self.values = MutableInMemoryProvider(name: "file \(path)", initialValues: Self.configValues(read.entries))
    }

    /// Unknown keys of the file, as warnings naming their line and the nearest setting.
    public var warnings: [String] { contents.withLock { $0.warnings } }

    /// "FILE line N" for a key the file sets.
    func source(of key: String) -> String {
        let line = contents.withLock { $0.entries[key]?.line }
        return line.map { "\(path) line \($0)" } ?? path
    }

    var entries: [String: Entry] { contents.withLock { $0.entries } }

    /// Re-reads the file; nil when its text is unchanged. On a bad line it throws and the
    /// provider keeps serving what it had.
    func reload() throws(ConfigurationError) -> (old: Contents, new: Contents)? {
        let text = try Self.text(of: path)
        if contents.withLock({ $0.text == text }) { return nil }
        let new = try Self.parse(text, path: path)
        let old = contents.withLock { c in
            defer { c = new }
            return c
        }
        publish(old: old.entries, new: new.entries)
        return (old, new)
    }

    /// Puts `contents` back (a reload whose settings disagree with each other is not kept).
    func restore(_ previous: Contents) {
        let current = contents.withLock { c in
            defer { c = previous }
            return c
        }
        publish(old: current.entries, new: previous.entries)
    }

    private func publish(old: [String: Entry], new: [String: Entry]) {
        for key in Set(old.keys).union(new.keys) where old[key]?.value != new[key]?.value {
            values.setValue(new[key].map { Self.configValue(key: key, $0.value) }, forKey: AbsoluteConfigKey([key]))
        }
    }

    static func configValues(_ entries: [String: Entry]) -> [AbsoluteConfigKey: ConfigValue] {
        Dictionary(uniqueKeysWithValues: entries.map { (AbsoluteConfigKey([$0.key]), configValue(key: $0.key, $0.value.value)) })
    }

    static func configValue(key: String, _ value: String) -> ConfigValue {
        ConfigValue(.string(value), isSecret: WorkerConfiguration.secretKeys.contains(key))
    }

    static func text(of path: String) throws(ConfigurationError) -> String {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            throw ConfigurationError("cannot read config file \(path): it is a directory; give the file (key = value lines)")
        }
        do { return try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw ConfigurationError("cannot read config file \(path): \(error.localizedDescription)")
        }
    }

    static func read(_ path: String) throws(ConfigurationError) -> Contents {
        try parse(try text(of: path), path: path)
    }

    static func parse(_ text: String, path: String) throws(ConfigurationError) -> Contents {
        var contents = Contents(text: text)
        var scratch = WorkerConfiguration()
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            guard let eq = trimmed.firstIndex(of: "=") else {
                throw ConfigurationError("\(path) line \(number + 1): expected `key = value`, got \"\(trimmed)\"")
            }
            let key = trimmed[..<eq].trimmingCharacters(in: .whitespaces)
            let source = "\(path) line \(number + 1)"
            let value = try WorkerConfiguration.value(of: trimmed[trimmed.index(after: eq)...], source: source)
            guard WorkerConfiguration.keys.contains(key) else {
                contents.warnings.append(WorkerConfiguration.unknownKey(key, source: source))
                continue
            }
            try WorkerConfiguration.apply(&scratch, key: key, value: value, source: source)
            contents.entries[key] = Entry(value: value, line: number + 1)
        }
        return contents
    }
}

/// Everything is served by the in-memory provider (the handlers are `nonisolated(nonsending)`, as
/// swift-configuration declares them).
extension KeyValueFileProvider: ConfigProvider {
    public var providerName: String { values.providerName }

    public func value(forKey key: AbsoluteConfigKey, type: ConfigType) throws -> LookupResult {
        try values.value(forKey: key, type: type)
    }

    public func fetchValue(forKey key: AbsoluteConfigKey, type: ConfigType) async throws -> LookupResult {
        try await values.fetchValue(forKey: key, type: type)
    }

    public func watchValue<Return: ~Copyable>(
        forKey key: AbsoluteConfigKey, type: ConfigType,
        updatesHandler: nonisolated(nonsending) (_ updates: ConfigUpdatesAsyncSequence<Result<LookupResult, any Error>, Never>) async throws -> Return
    ) async throws -> Return {
        try await values.watchValue(forKey: key, type: type, updatesHandler: updatesHandler)
    }

    public func snapshot() -> any ConfigSnapshot { values.snapshot() }

    public func watchSnapshot<Return: ~Copyable>(
        updatesHandler: nonisolated(nonsending) (_ updates: ConfigUpdatesAsyncSequence<any ConfigSnapshot, Never>) async throws -> Return
    ) async throws -> Return {
        try await values.watchSnapshot(updatesHandler: updatesHandler)
    }
}

/// Which provider gave each setting its value, from the reader's access reports: a message about
/// a value names its source ("flag --batch-size", "environment variable CFSIGN_BATCH_SIZE",
/// "worker.conf line 3"), which `ConfigReader` itself does not return.
final class SettingSources: AccessReporter, Sendable {
    private let describe: [String: @Sendable (String) -> String]
    private let winners = Locked<[String: String]>([:])

    /// - Parameter describe: by provider name, how to name the source of a key it gave.
    init(describe: [String: @Sendable (String) -> String]) {
        self.describe = describe
    }

    func report(_ event: AccessEvent) {
        // The reader asks the providers in order and stops at the first value: that one won.
        guard let winner = event.providerResults.last(where: { (try? $0.result.get())?.value != nil }) else { return }
        let key = event.metadata.key.components.joined(separator: ".")
        winners.withLock { $0[key] = winner.providerName }
    }

    func source(of key: String) -> String {
        guard let provider = winners.withLock({ $0[key] }) else { return "configuration" }
        return describe[provider]?(key) ?? provider
    }
}

extension WorkerConfiguration {
    /// Settings whose values are secrets: swift-configuration redacts them in access logs
    /// (`CONFIG_ACCESS_LOG_FILE`), and no message of the worker echoes them.
    public static let secretKeys: Set<String> = ["redis"]

    /// Settings a running worker takes from a changed config file (`ConfigFileReloader`): how much
    /// it logs and what it may sign. Everything else is read once, at start.
    public static let liveKeys: Set<String> = ["log_level", "allowed_hosts", "allowed_path_prefixes", "prefix_max_lifetimes", "resource_wildcards"]

    /// The worker's providers, highest precedence first: command-line flags, `CFSIGN_<KEY>`
    /// variables, the `key = value` file; a setting none of them gives keeps its default (the
    /// property's initial value). One `ConfigReader` over them, reporting to `SettingSources`.
    public struct Providers: Sendable {
        public let reader: ConfigReader
        public let file: KeyValueFileProvider?
        /// Unknown keys, from the file and from the environment, alike.
        public let warnings: [String]
        let sources: SettingSources

        /// Checks every value of every source, in order (the file's lines, the environment,
        /// then the flags), so a bad value is refused wherever it is, naming where it is.
        public init(file path: String?, environment: [String: String], flags: [(key: String, value: String)]) throws(ConfigurationError) {
            let file = try path.map { (p) throws(ConfigurationError) in try KeyValueFileProvider(path: p) }
            var scratch = WorkerConfiguration()
            var variables: [String: String] = [:]
            for setting in settings {
                let name = environmentName(setting.key)
                if let value = environment[name] {
                    try apply(&scratch, key: setting.key, value: value, source: "environment variable \(name)")
                    variables[name] = value
                }
            }
            var warnings = file?.warnings ?? []
            let settingNames = Set(keys.map(environmentName))
            for name in environment.keys.sorted() where name.hasPrefix("CFSIGN_") && !settingNames.contains(name) && !notSettings.contains(name) {
                warnings.append(unknownKey(String(name.dropFirst("CFSIGN_".count)).lowercased(), source: "environment variable \(name)"))
            }
            var flagValues: [AbsoluteConfigKey: ConfigValue] = [:]
            for (key, value) in flags {
                try apply(&scratch, key: key, value: value, source: Self.flagSource(key))
                flagValues[AbsoluteConfigKey([key])] = KeyValueFileProvider.configValue(key: key, value)
            }
            // Only the settings' variables: CFSIGN_BIN and the rest are not read through it.
            let environmentProvider = EnvironmentVariablesProvider(
                environmentVariables: variables, secretsSpecifier: .specific(Set(secretKeys.map(environmentName)))
            ).prefixKeys(with: "cfsign")
            let flagProvider = InMemoryProvider(name: "flags", values: flagValues)
            var providers: [any ConfigProvider] = [flagProvider, environmentProvider]
            var describe: [String: @Sendable (String) -> String] = [
                flagProvider.providerName: { Self.flagSource($0) },
                environmentProvider.providerName: { "environment variable \(environmentName($0))" },
            ]
            if let file {
                providers.append(file)
                describe[file.providerName] = { file.source(of: $0) }
            }
            sources = SettingSources(describe: describe)
            reader = ConfigReader(providers: providers, accessReporter: sources)
            self.file = file
            self.warnings = warnings
        }

        /// "flag --batch-size" for `batch_size`.
        static func flagSource(_ key: String) -> String { "flag --\(key.replacingOccurrences(of: "_", with: "-"))" }

        /// The configuration these providers give now.
        public func configuration() throws(ConfigurationError) -> WorkerConfiguration {
            var c = try WorkerConfiguration(reader: reader, source: sources.source(of:))
            c.warnings = warnings
            return c
        }
    }

    /// Reads every setting of the table from `reader` (as text, the form every source shares),
    /// then checks the settings against each other.
    /// - Parameter source: where the value of a key came from, for messages.
    public init(reader: ConfigReader, source: (String) -> String = { _ in "configuration" }) throws(ConfigurationError) {
        var c = WorkerConfiguration()
        for setting in Self.settings {
            if let value = reader.string(forKey: ConfigKey([setting.key]), isSecret: Self.secretKeys.contains(setting.key)) {
                try Self.apply(&c, key: setting.key, value: value, source: source(setting.key))
            }
        }
        try c.validate()
        self = c
    }
}

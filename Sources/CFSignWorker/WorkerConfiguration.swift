import CFSignCore
import CFSignCrypto
import CFSignRedis
import Foundation

/// Every setting of a worker, validated. Built by `WorkerConfiguration(reader:)` from a
/// swift-configuration `ConfigReader` whose providers are (highest precedence first) command-line
/// flags, `CFSIGN_*` environment variables and a config file, over the defaults below
/// (`WorkerConfiguration.Providers`, or `load` in one call).
///
/// The file format is `key = value` lines with `#` comments, on a line of their own or at the end
/// of a setting (like redis.conf or an env file): every setting is one flat scalar, so nothing
/// richer is needed, and it is trivially diffable and templatable. `worker-config/worker.conf` lists every key with its default.
public struct WorkerConfiguration: Sendable {
    /// `redis`: where the queue lives. Default `redis://127.0.0.1:6379`.
    public var redis: RedisURL = .default
    /// `namespace`: the key prefix `{NS}:`. Default `cfsign`.
    public var namespace: Namespace = .default
    /// `worker_id`: unique per process; default `<host>-<pid>-<random hex>`.
    public var workerID: String = WorkerConfiguration.defaultWorkerID()
    /// `concurrency`: signing threads; default the number of cores.
    public var concurrency: Int = ProcessInfo.processInfo.activeProcessorCount
    /// `batch_size`: jobs taken in one round trip, 1-1000. Default 64.
    public var batchSize: Int = 64
    /// `max_lifetime`: the longest link this worker signs (seconds). Default 365 days.
    public var maximumLifetime: Int64 = 365 * 86400
    /// `reply_ttl`: seconds a reply list lives after the last reply. Default 300.
    public var replyTTL: Int64 = 300
    /// `dead_list_length`: `{NS}:dead` is trimmed to this many entries. Default 10000.
    public var deadListLength: Int = 10_000
    /// `heartbeat_interval`: seconds between heartbeats, at most 5 by default. Default 2.
    public var heartbeatInterval: Double = 2
    /// `heartbeat_ttl`: seconds a heartbeat lives; at most 3 intervals. Default 6.
    public var heartbeatTTL: Double = 6
    /// `keygroup_poll_interval`: seconds between re-reads of `{NS}:keygroup`. Default 5.
    public var keyGroupPollInterval: Double = 5
    /// `block_timeout`: seconds a blocking pop waits, well below `command_timeout`. Default 2.
    public var blockTimeout: Double = 2
    /// `command_timeout`: seconds any Redis reply may take. Default 10.
    public var commandTimeout: Double = 10
    /// `connect_timeout`: seconds to connect to Redis. Default 5.
    public var connectTimeout: Double = 5
    /// `default_hash`: digest for jobs that name none. Default SHA1 (CloudFront's default).
    public var defaultHash: HashAlgorithm = .sha1
    /// `allow_inline_keys`: accept `private_key_pem` in the key group (development only). Default false.
    public var allowInlineKeys = false
    /// `allow_group_readable_keys`: accept key files with mode & 077 != 0. Default false.
    public var allowGroupReadableKeys = false
    /// `key_unavailable_after`: seconds a job whose key's holder (an HSM) does not sign is retried,
    /// in flight, before it is answered `key_unavailable`. Default 30 (PROTOCOL.md).
    public var keyUnavailableAfter: Double = 30
    /// `kms_call_timeout`: seconds one AWS KMS call (Sign, GetPublicKey) or STS call may take
    /// before it counts as a failure of the key's holder (retried). Default 2 (PROTOCOL.md).
    public var kmsCallTimeout: Double = 2
    /// `kms_max_in_flight`: KMS Sign calls this worker has out at once; more jobs for a KMS key
    /// wait in the sign stage. Default 64.
    public var kmsMaxInFlight: Int = 64
    /// `pkcs11_modules`: the PKCS#11 modules a `pkcs11:` key's `module-path` may name (absolute
    /// paths, compared after resolving symlinks); nil (empty): any. Whoever writes the key group
    /// picks the module, and loading it runs its code in the process that holds the keys.
    public var pkcs11Modules: [String]? = nil
    /// `clock_skew_threshold`: seconds this worker's clock may differ from Redis's before it warns. Default 1.
    public var clockSkewThreshold: Double = 1
    /// `http_address`: HOST:PORT for /metrics, /healthz, /readyz; off when empty. Default off.
    public var httpAddress: String? = nil
    /// `http_max_connections`: connections to `http_address` open at once, so HTTP clients cannot
    /// take the descriptors signing needs (lowered at start when the open-files limit leaves too
    /// little room). At the cap a new connection replaces the longest-open idle one. Default 256.
    public var httpMaxConnections: Int = 256
    /// `http_idle_timeout`: seconds an HTTP connection may send nothing (before a request or
    /// between requests) before it is closed. Default 30.
    public var httpIdleTimeout: Double = 30
    /// `http_header_timeout`: seconds an HTTP client has to send a whole request once it started
    /// one (a head dribbled byte by byte is closed). Default 10.
    public var httpHeaderTimeout: Double = 10
    /// `signature_cache_size`: signatures kept by (group version, key, digest, policy); 0 turns the
    /// cache off. Default 4096.
    public var signatureCacheSize: Int = 4096
    /// `expiry_rounding`: round `expires_in` expiries up to this granularity (seconds; 0 off), so
    /// repeated requests for one object get one identical, cacheable URL. Default 0.
    public var expiryRounding: Int64 = 0
    /// Signing policy: `allowed_hosts`, `allowed_path_prefixes`, `prefix_max_lifetimes`,
    /// `resource_wildcards` (any, within-prefix, none). Default: no rules.
    public var rules = SigningRules()
    /// `audit`: off, stream (a capped `{NS}:audit` stream) or log (one log line per job). Default off.
    public var audit: AuditMode = .off
    /// `audit_stream_length`: the audit stream is trimmed to about this many entries. Default 100000.
    public var auditStreamLength: Int = 100_000
    /// `log_level`: trace, debug, info, notice, warning, error, critical. Default info.
    public var logLevel: String = "info"
    /// `max_recoveries`: a job recovered from dead workers' in-flight lists more than this many
    /// times goes to `{NS}:dead` as `poison_job` instead of to the next worker. Default 3.
    public var maximumRecoveries: Int = 3
    /// What `load` ignored and the worker should log at start: unknown keys, from any source.
    public var warnings: [String] = []

    public init() {}

    /// The limits every job is signed under.
    public var signingLimits: SigningLimits {
        var limits = SigningLimits(maximumLifetime: maximumLifetime, defaultHash: defaultHash, supportedHashes: DigestSupport.signable)
        limits.expiryRounding = expiryRounding
        return limits
    }

    public static func defaultWorkerID() -> String {
        var host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "host"
        host = String(host.unicodeScalars.map { Character($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "-" ? $0 : "_") })
        let random = (0..<4).map { _ in String(UInt8.random(in: 0...255), radix: 16).leftPadded(2) }.joined()
        return "\(host)-\(ProcessInfo.processInfo.processIdentifier)-\(random)"
    }
}

/// A setting that cannot be used: names the setting, where it came from, and what is allowed.
/// Where the audit trail of signed and refused jobs goes.
public enum AuditMode: String, Sendable {
    case off, stream, log
}

public struct ConfigurationError: Error, Sendable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

extension WorkerConfiguration {
    /// One setting: its key, its help line, and how to apply a textual value.
    struct Setting: Sendable {
        let key: String
        let apply: @Sendable (inout WorkerConfiguration, String) throws(ConfigurationError) -> Void
    }

    /// The environment variable for a key: `CFSIGN_` + upper-case key.
    public static func environmentName(_ key: String) -> String { "CFSIGN_" + key.uppercased() }

    /// The one settings table. Each key also needs its flag in `Worker.settingFlags`
    /// (Sources/cfsign/WorkerCommand.swift); Tests/system/test_worker_config.py fails without it.
    static let settings: [Setting] = [
        Setting(key: "redis") { c, v throws(ConfigurationError) in
            do throws(RedisError) { c.redis = try RedisURL(parsing: v) } catch { throw ConfigurationError(error.message) }
        },
        Setting(key: "namespace") { c, v throws(ConfigurationError) in
            do throws(InvalidNamespace) { c.namespace = try Namespace(v) } catch { throw ConfigurationError(error.description) }
        },
        Setting(key: "worker_id") { c, v throws(ConfigurationError) in
            guard !v.isEmpty, v.utf8.count <= 128, !v.contains(":"), v.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
                throw ConfigurationError("must be 1-128 printable ASCII characters without ':' or spaces")
            }
            c.workerID = v
        },
        Setting(key: "concurrency") { c, v throws(ConfigurationError) in c.concurrency = try int(v, 1...256) },
        Setting(key: "batch_size") { c, v throws(ConfigurationError) in c.batchSize = try int(v, 1...1000) },
        Setting(key: "max_lifetime") { c, v throws(ConfigurationError) in
            c.maximumLifetime = try duration(v, 1...(100 * 365 * 86400))
        },
        Setting(key: "reply_ttl") { c, v throws(ConfigurationError) in c.replyTTL = try duration(v, 1...(7 * 86400)) },
        Setting(key: "dead_list_length") { c, v throws(ConfigurationError) in c.deadListLength = try int(v, 1...10_000_000) },
        Setting(key: "heartbeat_interval") { c, v throws(ConfigurationError) in c.heartbeatInterval = try seconds(v, 0.1...60) },
        Setting(key: "heartbeat_ttl") { c, v throws(ConfigurationError) in c.heartbeatTTL = try seconds(v, 0.3...600) },
        Setting(key: "keygroup_poll_interval") { c, v throws(ConfigurationError) in c.keyGroupPollInterval = try seconds(v, 0.1...600) },
        Setting(key: "block_timeout") { c, v throws(ConfigurationError) in c.blockTimeout = try seconds(v, 0.1...30) },
        Setting(key: "command_timeout") { c, v throws(ConfigurationError) in c.commandTimeout = try seconds(v, 0.5...120) },
        Setting(key: "connect_timeout") { c, v throws(ConfigurationError) in c.connectTimeout = try seconds(v, 0.1...120) },
        Setting(key: "default_hash") { c, v throws(ConfigurationError) in
            guard let h = HashAlgorithm(wireName: v) else { throw ConfigurationError("must be SHA1 or SHA256") }
            c.defaultHash = h
        },
        Setting(key: "allow_inline_keys") { c, v throws(ConfigurationError) in c.allowInlineKeys = try bool(v) },
        Setting(key: "allow_group_readable_keys") { c, v throws(ConfigurationError) in c.allowGroupReadableKeys = try bool(v) },
        Setting(key: "key_unavailable_after") { c, v throws(ConfigurationError) in c.keyUnavailableAfter = try seconds(v, 0...3600) },
        Setting(key: "kms_call_timeout") { c, v throws(ConfigurationError) in c.kmsCallTimeout = try seconds(v, 0.05...60) },
        Setting(key: "kms_max_in_flight") { c, v throws(ConfigurationError) in c.kmsMaxInFlight = try int(v, 1...4096) },
        Setting(key: "pkcs11_modules") { c, v throws(ConfigurationError) in
            let paths = SigningRules.parseList(v)
            guard paths.allSatisfy({ $0.hasPrefix("/") }) else {
                throw ConfigurationError("must be a comma-separated list of absolute paths, e.g. /usr/lib/softhsm/libsofthsm2.so")
            }
            c.pkcs11Modules = paths.isEmpty ? nil : paths
        },
        Setting(key: "clock_skew_threshold") { c, v throws(ConfigurationError) in c.clockSkewThreshold = try seconds(v, 0.001...3600) },
        Setting(key: "http_address") { c, v throws(ConfigurationError) in
            if v.isEmpty { c.httpAddress = nil; return }
            guard let colon = v.lastIndex(of: ":"), !v[..<colon].isEmpty, let port = Int(v[v.index(after: colon)...]), (0...65535).contains(port) else {
                throw ConfigurationError("must be HOST:PORT, e.g. 127.0.0.1:9464 or 0.0.0.0:9464")
            }
            c.httpAddress = v
        },
        Setting(key: "http_max_connections") { c, v throws(ConfigurationError) in c.httpMaxConnections = try int(v, 1...100_000) },
        Setting(key: "http_idle_timeout") { c, v throws(ConfigurationError) in c.httpIdleTimeout = try seconds(v, 0.1...3600) },
        Setting(key: "http_header_timeout") { c, v throws(ConfigurationError) in c.httpHeaderTimeout = try seconds(v, 0.1...600) },
        Setting(key: "signature_cache_size") { c, v throws(ConfigurationError) in c.signatureCacheSize = try int(v, 0...10_000_000) },
        Setting(key: "expiry_rounding") { c, v throws(ConfigurationError) in
            c.expiryRounding = v == "0" ? 0 : try duration(v, 1...(86400 * 31))
        },
        Setting(key: "allowed_hosts") { c, v throws(ConfigurationError) in
            c.rules.allowedHosts = SigningRules.parseList(v).map { $0.lowercased() }
        },
        Setting(key: "allowed_path_prefixes") { c, v throws(ConfigurationError) in
            let prefixes = SigningRules.parseList(v)
            guard prefixes.allSatisfy({ $0.hasPrefix("/") }) else { throw ConfigurationError("must be a comma-separated list of paths starting with '/', e.g. /invoices/, /reports/") }
            c.rules.allowedPathPrefixes = prefixes
        },
        Setting(key: "prefix_max_lifetimes") { c, v throws(ConfigurationError) in
            guard let l = SigningRules.parseLifetimes(v) else { throw ConfigurationError("must be a comma-separated list of /prefix=duration, e.g. /invoices/=30d, /media/=1h") }
            c.rules.prefixLifetimes = l
        },
        Setting(key: "resource_wildcards") { c, v throws(ConfigurationError) in
            guard let w = SigningRules.Wildcards(rawValue: v) else { throw ConfigurationError("must be any, within-prefix or none") }
            c.rules.wildcards = w
        },
        Setting(key: "audit") { c, v throws(ConfigurationError) in
            guard let a = AuditMode(rawValue: v) else { throw ConfigurationError("must be off, stream or log") }
            c.audit = a
        },
        Setting(key: "audit_stream_length") { c, v throws(ConfigurationError) in c.auditStreamLength = try int(v, 100...100_000_000) },
        Setting(key: "log_level") { c, v throws(ConfigurationError) in
            guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(v) else {
                throw ConfigurationError("must be one of trace, debug, info, notice, warning, error, critical")
            }
            c.logLevel = v
        },
        Setting(key: "max_recoveries") { c, v throws(ConfigurationError) in c.maximumRecoveries = try int(v, 0...1000) },
    ]

    public static var keys: [String] { settings.map(\.key) }

    /// Builds a configuration: defaults, then the file (if any), then the environment, then `overrides`
    /// (flags, by setting key); then checks the settings against each other. A `ConfigReader`
    /// over `Providers` does the precedence; see `WorkerConfigurationProviders.swift`.
    public static func load(file: String?, environment: [String: String], overrides: [(key: String, value: String)]) throws(ConfigurationError) -> WorkerConfiguration {
        try Providers(file: file, environment: environment, flags: overrides).configuration()
    }

    /// The value part of a `key = value` line: a `#` after whitespace starts a comment (so a
    /// setting can carry a note, `audit = stream  # one entry per job`), while a `#` inside a
    /// word (`redis://:pa#ss@host`) or inside double quotes stays part of the value.
    static func value(of text: Substring, source: String) throws(ConfigurationError) -> String {
        let rest = text.trimmingCharacters(in: .whitespaces)
        if rest.hasPrefix("\"") {
            let body = rest.dropFirst()
            guard let close = body.firstIndex(of: "\"") else {
                throw ConfigurationError("\(source): a quoted value has no closing \"")
            }
            let after = body[body.index(after: close)...].trimmingCharacters(in: .whitespaces)
            guard after.isEmpty || after.hasPrefix("#") else {
                throw ConfigurationError("\(source): unexpected text after the quoted value: \(after)")
            }
            return String(body[..<close])
        }
        var previous: Character = " "
        for i in rest.indices {
            if rest[i] == "#", previous == " " || previous == "\t" {
                return rest[..<i].trimmingCharacters(in: .whitespaces)
            }
            previous = rest[i]
        }
        return rest
    }

    /// `CFSIGN_*` variables that are not worker settings: the other commands' and the test
    /// suites' own (`CFSIGN_BIN`, ...). They are not reported as unknown settings.
    static let notSettings: Set<String> = [
        "CFSIGN_BIN", "CFSIGN_HA_TESTS", "CFSIGN_HA_REPORT", "CFSIGN_SKIP_EXAMPLES", "CFSIGN_SKIP_SANITIZERS", "CFSIGN_FUZZ_SECONDS",
    ]

    /// Unknown keys are treated alike from every source: ignored with a warning that names the
    /// source and the nearest known key, so a typo is seen in the first log lines.
    static func unknownKey(_ key: String, source: String) -> String {
        var text = "\(source): unknown setting \"\(key)\", ignored"
        if let near = keys.min(by: { editDistance($0, key) < editDistance($1, key) }), editDistance(near, key) <= 3 {
            text += "; did you mean \(near)?"
        } else {
            text += "; known settings: \(keys.joined(separator: ", "))"
        }
        return text
    }

    /// Levenshtein distance, for "did you mean" (keys are short ASCII).
    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a.utf8), b = Array(b.utf8)
        var row = Array(0...b.count)
        for i in 1...max(a.count, 1) where !a.isEmpty {
            var previous = row[0]
            row[0] = i
            for j in 1...max(b.count, 1) where !b.isEmpty {
                let current = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
                previous = current
            }
        }
        return row[b.count]
    }

    static func apply(_ config: inout WorkerConfiguration, key: String, value: String, source: String) throws(ConfigurationError) {
        guard let setting = settings.first(where: { $0.key == key }) else {
            throw ConfigurationError("\(source): unknown setting \"\(key)\"; known settings: \(keys.joined(separator: ", "))")
        }
        do {
            try setting.apply(&config, value)
        } catch {
            let shown = key == "redis" ? "" : " = \(value)"
            throw ConfigurationError("setting \(key)\(shown) (\(source)): \(error.message)")
        }
    }

    /// Checks that settings agree with each other.
    public func validate() throws(ConfigurationError) {
        if heartbeatTTL > heartbeatInterval * 3 + 0.0001 {
            throw ConfigurationError("setting heartbeat_ttl = \(heartbeatTTL) must be at most 3 x heartbeat_interval (\(heartbeatInterval)), so a dead worker is noticed quickly")
        }
        if heartbeatTTL <= heartbeatInterval {
            throw ConfigurationError("setting heartbeat_ttl = \(heartbeatTTL) must be longer than heartbeat_interval (\(heartbeatInterval)), or live workers would look dead")
        }
        if blockTimeout * 2 > commandTimeout {
            throw ConfigurationError("setting block_timeout = \(blockTimeout) must be at most half of command_timeout (\(commandTimeout)); a blocking pop that outlives the socket timeout kills the connection")
        }
    }

    private static func int(_ v: String, _ range: ClosedRange<Int>) throws(ConfigurationError) -> Int {
        guard let n = Int(v), range.contains(n) else { throw ConfigurationError("must be a whole number from \(range.lowerBound) to \(range.upperBound)") }
        return n
    }

    private static func duration(_ v: String, _ range: ClosedRange<Int64>) throws(ConfigurationError) -> Int64 {
        guard let n = Durations.parse(v), range.contains(n) else {
            throw ConfigurationError("must be a duration (\(Durations.help)) from \(Durations.describe(range.lowerBound)) to \(Durations.describe(range.upperBound))")
        }
        return n
    }

    private static func seconds(_ v: String, _ range: ClosedRange<Double>) throws(ConfigurationError) -> Double {
        var text = Substring(v)
        if text.hasSuffix("ms") {
            guard let n = Double(text.dropLast(2)), n.isFinite else { throw ConfigurationError("must be a number of seconds (e.g. 2, 0.5, 500ms)") }
            if range.contains(n / 1000) { return n / 1000 }
        } else {
            if text.hasSuffix("s") { text = text.dropLast() }
            if let n = Double(text), n.isFinite, range.contains(n) { return n }
        }
        throw ConfigurationError("must be a number of seconds from \(range.lowerBound) to \(range.upperBound) (e.g. 2, 0.5, 500ms)")
    }

    private static func bool(_ v: String) throws(ConfigurationError) -> Bool {
        switch v.lowercased() {
        case "true", "yes", "1", "on": return true
        case "false", "no", "0", "off": return false
        default: throw ConfigurationError("must be true or false")
        }
    }
}

extension String {
    func leftPadded(_ width: Int, with pad: Character = "0") -> String {
        count >= width ? self : String(repeating: pad, count: width - count) + self
    }
}

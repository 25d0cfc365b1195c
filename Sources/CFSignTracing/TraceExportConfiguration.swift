import CFSignCore
import Foundation

/// Where and how the worker exports spans, read from the standard OpenTelemetry variables
/// (OpenTelemetry's "Environment Variable Specification" and "OTLP Exporter Configuration"), and
/// refused whole, with a message naming the variable, when one of them is unusable: a worker that
/// starts must export what its operator asked for.
public struct TraceExportConfiguration: Sendable {
    /// The full URL spans are POSTed to (`…/v1/traces` under a base endpoint).
    public var endpoint: String
    public var encoding: Encoding
    /// Extra request headers (an API key for a hosted backend): never logged.
    public var headers: [(name: String, value: String)]
    /// One export request's deadline, connecting included.
    public var timeout: Duration
    /// How long a span may wait for its batch to fill before the batch is sent anyway.
    public var scheduleDelay: Duration
    /// Spans held while a batch is being sent; past it, new spans are dropped and counted.
    public var maxQueueSize: Int
    public var maxExportBatchSize: Int
    public var sampler: Sampler
    public var resource: [Attribute]

    public enum Encoding: Sendable, Equatable {
        case protobuf, json
        public var contentType: String { self == .protobuf ? "application/x-protobuf" : "application/json" }
    }

    public struct Failure: Error, Sendable, CustomStringConvertible {
        public let message: String
        init(_ message: String) { self.message = message }
        public var description: String { message }
    }

    /// Whether the environment asks for trace export at all: an endpoint is set, and neither
    /// `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none` says otherwise.
    public static func isRequested(_ environment: [String: String]) -> Bool {
        // Read through `Variables`, as `init` does, so "empty or spaces counts as unset" is one rule.
        let env = Variables(environment)
        return (env["OTEL_EXPORTER_OTLP_ENDPOINT"] != nil || env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] != nil)
            && env["OTEL_SDK_DISABLED"]?.lowercased() != "true"
            && env["OTEL_TRACES_EXPORTER"]?.lowercased() != "none"
    }

    /// nil when export is not requested (`isRequested`).
    public init?(environment: [String: String]) throws(Failure) {
        guard Self.isRequested(environment) else { return nil }
        let env = Variables(environment)

        if let exporter = env["OTEL_TRACES_EXPORTER"], exporter.lowercased() != "otlp" {
            throw Failure("OTEL_TRACES_EXPORTER=\(exporter) is not offered: the worker exports over OTLP only (otlp, the default, or none)")
        }
        let given: String
        if let traces = env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] {
            given = try Self.checkedURL(traces, variable: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        } else {
            let base = try Self.checkedURL(env["OTEL_EXPORTER_OTLP_ENDPOINT"] ?? "", variable: "OTEL_EXPORTER_OTLP_ENDPOINT")
            guard !base.contains("?"), !base.contains("#") else {
                throw Failure("OTEL_EXPORTER_OTLP_ENDPOINT=\(Self.redacted(base)) has a query or fragment: a base endpoint gets /v1/traces appended; give the full URL in OTEL_EXPORTER_OTLP_TRACES_ENDPOINT instead")
            }
            given = (base.hasSuffix("/") ? base : base + "/") + "v1/traces"
        }
        loggedEndpoint = Self.redacted(given)
        // `user:password@` in the URL becomes a Basic Authorization header (as curl does): the
        // HTTP client would not send it, and the request URL then carries no secret.
        let (withoutUserinfo, userinfo) = Self.splitUserinfo(given)
        endpoint = withoutUserinfo
        var basic: String?
        if let userinfo {
            let (user, password) = userinfo.firstIndex(of: ":").map { (userinfo[..<$0], userinfo[userinfo.index(after: $0)...]) } ?? (userinfo[...], "")
            guard let u = Self.percentDecoded(user), let p = Self.percentDecoded(password) else {
                throw Failure("the endpoint's user:password is not valid percent-encoded UTF-8")
            }
            basic = "Basic " + Data((u + ":" + p).utf8).base64EncodedString()
        }

        let (protocolName, protocolVariable) = env.signal("PROTOCOL")
        switch protocolName ?? "http/protobuf" {
        case "http/protobuf": encoding = .protobuf
        case "http/json": encoding = .json
        case let other:
            throw Failure("\(protocolVariable)=\(other) is not offered: this worker exports traces over OTLP/HTTP only (http/protobuf, the default, or http/json)")
        }
        let (compression, compressionVariable) = env.signal("COMPRESSION")
        if let compression, compression.lowercased() != "none" {
            throw Failure("\(compressionVariable)=\(compression) is not offered: spans are sent uncompressed (none)")
        }
        for suffix in ["CERTIFICATE", "CLIENT_KEY", "CLIENT_CERTIFICATE"] {
            let (value, variable) = env.signal(suffix)
            if value != nil {
                throw Failure("\(variable) is not offered: an https endpoint is checked against the system's trust store, and no client certificate is sent")
            }
        }

        var headers: [(name: String, value: String)] = basic.map { [("Authorization", $0)] } ?? []
        for variable in ["OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"] {
            for (n, (name, value)) in try Self.list(env[variable] ?? "", variable: variable, showValues: false).enumerated() {
                // Never the name itself: a misplaced credential ("Authorization: Basic …") would land there.
                guard !name.isEmpty, name.utf8.allSatisfy(Self.isTokenByte) else {
                    throw Failure("\(variable): member \(n + 1) has no valid header name before its \"=\" (name=value,name=value)")
                }
                guard !value.utf8.contains(where: { $0 < 0x20 && $0 != 0x09 || $0 == 0x7F }) else {
                    throw Failure("\(variable): the value of \(name) holds a control character")
                }
                headers.removeAll { $0.name.lowercased() == name.lowercased() }  // the traces variable wins
                headers.append((name, value))
            }
        }
        self.headers = headers

        let (timeoutText, timeoutVariable) = env.signal("TIMEOUT")
        var timeout = try Self.milliseconds(timeoutText, variable: timeoutVariable, default: 10_000)
        // The batch processor's own export deadline; the shorter of the two bounds a request.
        timeout = min(timeout, try Self.milliseconds(env["OTEL_BSP_EXPORT_TIMEOUT"], variable: "OTEL_BSP_EXPORT_TIMEOUT", default: 30_000))
        self.timeout = timeout
        scheduleDelay = try Self.milliseconds(env["OTEL_BSP_SCHEDULE_DELAY"], variable: "OTEL_BSP_SCHEDULE_DELAY", default: 5_000)
        // Bounded: the queue is memory the worker holds (twice, while a take is being sent).
        maxQueueSize = try Self.count(env["OTEL_BSP_MAX_QUEUE_SIZE"], variable: "OTEL_BSP_MAX_QUEUE_SIZE", default: 2048, maximum: Self.maximumQueueSize)
        maxExportBatchSize = try Self.count(env["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"], variable: "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", default: 512, maximum: Self.maximumQueueSize)
        if maxExportBatchSize > maxQueueSize {
            throw Failure("OTEL_BSP_MAX_EXPORT_BATCH_SIZE=\(maxExportBatchSize) is more than OTEL_BSP_MAX_QUEUE_SIZE=\(maxQueueSize): a batch is taken from the queue")
        }

        sampler = try Sampler(name: env["OTEL_TRACES_SAMPLER"], argument: env["OTEL_TRACES_SAMPLER_ARG"])

        var resource = try Self.list(env["OTEL_RESOURCE_ATTRIBUTES"] ?? "", variable: "OTEL_RESOURCE_ATTRIBUTES", showValues: true)
            .map { Attribute($0.0, $0.1) }
        let serviceName = env["OTEL_SERVICE_NAME"]
            ?? resource.first { $0.key == "service.name" }.map { if case .string(let s) = $0.value { s } else { "" } }
            ?? "cfsign-worker"
        resource.removeAll { ["service.name", "telemetry.sdk.name", "telemetry.sdk.language"].contains($0.key) }
        resource.insert(contentsOf: [
            Attribute("service.name", serviceName),
            Attribute("telemetry.sdk.name", "cfsign"),
            Attribute("telemetry.sdk.language", "swift"),
        ], at: 0)
        self.resource = resource
    }

    /// The endpoint as the worker logs it: a `user:password@` as `***@`, a query as `?***`.
    public let loggedEndpoint: String

    /// At most this many spans queued or per batch (a million spans would be hundreds of MB).
    public static let maximumQueueSize = 100_000

    /// `url` as a log may show it: its userinfo (`user:password@`, which a hosted collector's URL
    /// may carry) as `***@` and its query (which may hold an API key) as `?***`. The authority
    /// ends at the first `/`; a `?` or `#` before the last `@` there is taken as part of a
    /// password (unencoded, but never to be shown). Text without `scheme://` is taken to start
    /// with one.
    public static func redacted(_ url: String) -> String {
        let (rest, userinfo) = splitUserinfo(url)
        var shown = rest
        if userinfo != nil {
            let start = shown.range(of: "://")?.upperBound ?? shown.startIndex
            shown.insert(contentsOf: "***@", at: start)
        }
        if let q = shown.firstIndex(of: "?") {
            let end = shown[q...].firstIndex(of: "#") ?? shown.endIndex
            shown.replaceSubrange(shown.index(after: q)..<end, with: "***")
        }
        return shown
    }

    /// `url` without its userinfo, and the userinfo (nil when there is none).
    static func splitUserinfo(_ url: String) -> (String, Substring?) {
        let authorityStart = url.range(of: "://")?.upperBound ?? url.startIndex
        let rest = url[authorityStart...]
        let authorityEnd = rest.firstIndex(of: "/") ?? rest.endIndex
        guard let at = rest[..<authorityEnd].lastIndex(of: "@") else { return (url, nil) }
        return (String(url[..<authorityStart]) + String(url[url.index(after: at)...]), rest[..<at])
    }

    // MARK: parsing

    /// The environment with empty values treated as unset (the specification's rule).
    private struct Variables {
        let environment: [String: String]
        init(_ environment: [String: String]) { self.environment = environment }
        subscript(name: String) -> String? {
            guard let v = environment[name]?.trimmingSpaces, !v.isEmpty else { return nil }
            return String(v)
        }
        /// `OTEL_EXPORTER_OTLP_TRACES_<suffix>`, else `OTEL_EXPORTER_OTLP_<suffix>`, with the name
        /// of the one that was read (for a message).
        func signal(_ suffix: String) -> (String?, String) {
            if let v = self["OTEL_EXPORTER_OTLP_TRACES_" + suffix] { return (v, "OTEL_EXPORTER_OTLP_TRACES_" + suffix) }
            return (self["OTEL_EXPORTER_OTLP_" + suffix], "OTEL_EXPORTER_OTLP_" + suffix)
        }
    }

    private static func checkedURL(_ text: String, variable: String) throws(Failure) -> String {
        let lower = text.lowercased()
        guard lower.hasPrefix("http://") || lower.hasPrefix("https://") else {
            throw Failure("\(variable)=\(redacted(text)) is not an http:// or https:// URL")
        }
        let authority = text.drop { $0 != ":" }.dropFirst(3).prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        guard !authority.isEmpty, !authority.hasSuffix("@") else {
            throw Failure("\(variable)=\(redacted(text)) names no host")
        }
        guard !text.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7F }) else {
            throw Failure("\(variable) holds a space or a control character")
        }
        return text
    }

    private static func milliseconds(_ text: String?, variable: String, default value: Int) throws(Failure) -> Duration {
        // A day at most: a longer export deadline or batch delay is a typo.
        .milliseconds(try count(text, variable: variable, default: value, maximum: 86_400_000, what: "milliseconds"))
    }

    private static func count(_ text: String?, variable: String, default value: Int, maximum: Int, what: String = "spans") throws(Failure) -> Int {
        guard let text else { return value }
        guard text.utf8.count <= 9, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let n = Int(text), n >= 1, n <= maximum else {
            throw Failure("\(variable)=\(text) is not a whole number of \(what) from 1 to \(maximum)")
        }
        return n
    }

    /// A `key=value,key=value` list (the W3C Baggage form the specification uses for
    /// `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_EXPORTER_OTLP_HEADERS`), values percent-decoded.
    private static func list(_ text: String, variable: String, showValues: Bool) throws(Failure) -> [(String, String)] {
        var pairs: [(String, String)] = []
        for member in text.split(separator: ",", omittingEmptySubsequences: false) {
            let m = member.trimmingSpaces
            if m.isEmpty { continue }
            let n = pairs.count + 1
            guard let eq = m.firstIndex(of: "=") else {
                throw Failure(showValues ? "\(variable): \"\(m)\" is not key=value" : "\(variable): member \(n) is not name=value")
            }
            guard let key = percentDecoded(m[..<eq].trimmingSpaces), !key.isEmpty else {
                throw Failure("\(variable): member \(n) has no key, or one that is not valid percent-encoded UTF-8")
            }
            guard let value = percentDecoded(m[m.index(after: eq)...].trimmingSpaces) else {
                throw Failure("\(variable): the value of member \(n)\(showValues ? " (\(key))" : "") is not valid percent-encoded UTF-8")
            }
            pairs.append((key, value))
        }
        return pairs
    }

    static func percentDecoded(_ text: Substring) -> String? {
        PercentEncoding.decode(text).flatMap { String(validating: $0, as: UTF8.self) }
    }

    /// RFC 9110 `tchar`.
    private static func isTokenByte(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): return true
        default: return "!#$%&'*+-.^_`|~".utf8.contains(b)
        }
    }
}

/// Which spans are recorded (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`).
public struct Sampler: Sendable, Equatable {
    /// Follow the parent's sampled flag when the job carries a `traceparent`.
    public let parentBased: Bool
    /// A trace is sampled (without a parent, or always when not parent-based) when the last 8
    /// bytes of its id are below this; 0: never, `.max`: always.
    let bound: UInt64
    public let ratio: Double

    /// The specification's default: `parentbased_always_on`.
    public static let `default` = Sampler(parentBased: true, ratio: 1)

    init(parentBased: Bool, ratio: Double) {
        self.parentBased = parentBased
        self.ratio = ratio
        // Double(UInt64.max) is 2^64, which UInt64 cannot hold: the ends are set, not converted.
        bound = ratio >= 1 ? .max : ratio <= 0 ? 0 : UInt64(ratio * Double(UInt64.max))
    }

    init(name: String?, argument: String?) throws(TraceExportConfiguration.Failure) {
        let name = (name ?? "parentbased_always_on").lowercased()
        let ratio: Double
        // Read only by the two ratio samplers; the others ignore it (the specification's rule).
        if let argument, name.hasSuffix("traceidratio") {
            guard let r = Double(argument), r.isFinite, r >= 0, r <= 1 else {
                throw TraceExportConfiguration.Failure("OTEL_TRACES_SAMPLER_ARG=\(argument) is not a ratio between 0 and 1")
            }
            ratio = r
        } else {
            ratio = 1
        }
        switch name {
        case "always_on": self.init(parentBased: false, ratio: 1)
        case "always_off": self.init(parentBased: false, ratio: 0)
        case "traceidratio": self.init(parentBased: false, ratio: ratio)
        case "parentbased_always_on": self.init(parentBased: true, ratio: 1)
        case "parentbased_always_off": self.init(parentBased: true, ratio: 0)
        case "parentbased_traceidratio": self.init(parentBased: true, ratio: ratio)
        case let other:
            throw TraceExportConfiguration.Failure("OTEL_TRACES_SAMPLER=\(other) is not offered: always_on, always_off, traceidratio, parentbased_always_on (the default), parentbased_always_off or parentbased_traceidratio")
        }
    }

    /// Nothing can ever be sampled: the worker need not trace at all.
    public var samplesNothing: Bool { !parentBased && bound == 0 }

    /// - Parameter parentSampled: the parent's sampled flag; nil for a root span.
    public func isSampled(_ traceID: TraceID, parentSampled: Bool?) -> Bool {
        if parentBased, let parentSampled { return parentSampled }
        return bound == .max || traceID.low < bound
    }
}

extension StringProtocol where SubSequence == Substring {
    var trimmingSpaces: Substring {
        let s = self[...]
        let isSpace = { (c: Character) in c == " " || c == "\t" }
        guard let first = s.firstIndex(where: { !isSpace($0) }), let last = s.lastIndex(where: { !isSpace($0) }) else { return s[s.endIndex...] }
        return s[first...last]
    }
}

import CFSignSync
import ArgumentParser
import CFSignCore
import CFSignCrypto
import CFSignEdge
import CFSignHTTP
import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import CFSignKMS

struct Edge: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a local CloudFront stand-in that serves files only to valid signed URLs or signed cookies.",
        usage: """
            cfsign edge (--root <dir> | --origin <url>) --listen <host:port>
              (--public-key <id=file> ... | --keygroup-from-redis) [<options>]
            """,
        discussion: """
            Serves the files under --root (or forwards to --origin) for GET and HEAD requests that carry \
            a valid signed URL (Expires or Policy, Signature, Key-Pair-Id, Hash-Algorithm in the query) \
            or, when the query has none of those, a valid set of signed cookies (CloudFront-Expires or \
            CloudFront-Policy, CloudFront-Signature, CloudFront-Key-Pair-Id, CloudFront-Hash-Algorithm). \
            It checks exactly what `cfsign verify` checks: key id trusted, signature (SHA1/SHA256, \
            RSA/EC), expiry, start time, viewer IP, and the URL against the policy's resource \
            (wildcards included). The URL checked is http:// + Host header + path + the query without \
            the signing parameters, in their original order; the signing parameters are stripped \
            before the file lookup or the origin request, as CloudFront does.

            Refusals are 403 with CloudFront's XML body (MissingKey when the request is not signed, \
            AccessDenied with the reason otherwise), an X-Cfsign-Refusal header naming the reason \
            (missing_key_pair_id, unknown_key, bad_signature, expired, not_yet_valid, ip_not_allowed, \
            resource_mismatch, ...) and one log line on stderr. Other methods get 405; a path that \
            does not exist gets 404, only after the signature was accepted. Files are served with \
            Content-Type, Content-Length, Last-Modified, ETag, Cache-Control and single byte ranges \
            (206, 416); --origin passes the origin's status, body and headers back (redirects are not \
            followed; a body is buffered up to 64 MiB; the whole request may take 120 s; no proxy \
            variables are read: the edge connects to the origin itself).

            Keys: --public-key ID=FILE for each trusted key (the public key PEM uploaded to CloudFront \
            under that id), or --keygroup-from-redis to trust the keys of {NS}:keygroup (each key's \
            public_key_pem, else the public half of its private key), re-read every few seconds so \
            rotations show up.

            On start it prints its base URL (http://HOST:PORT) on stdout; logs go to stderr. \
            SIGINT or SIGTERM stops it.

            Examples:
              cfsign edge --root ./private --listen 127.0.0.1:8080 \\
                --public-key K2JCJMDEHXQW5F=keys/k.pub.pem
              url=$(cfsign sign http://127.0.0.1:8080/report.pdf \\
                --key-id K2JCJMDEHXQW5F --private-key keys/k.pem --expires-in 1h)
              curl -sS -o report.pdf -w '%{http_code}\\n' "$url"   # 200
              curl -sS http://127.0.0.1:8080/report.pdf           # 403 MissingKey
              cfsign edge --origin http://127.0.0.1:5000/my-bucket \\
                --listen 127.0.0.1:8080 --keygroup-from-redis
            """
    )

    @Option(help: ArgumentHelp("Serve the files under this folder.", valueName: "dir"))
    var root: String?

    @Option(help: ArgumentHelp("Forward accepted requests to this origin (http(s)://host:port[/path], e.g. a local S3 server's bucket URL).", valueName: "url"))
    var origin: String?

    @Option(help: ArgumentHelp("Address to listen on (port 0: any free port; the URL is printed on stdout).", valueName: "host:port"))
    var listen: String

    @Option(name: .customLong("public-key"), help: ArgumentHelp("A trusted key: its CloudFront key id and public key PEM file (repeatable).", valueName: "id=file"))
    var publicKeys: [String] = []

    @Flag(help: "Trust the public keys of the key group in Redis ({NS}:keygroup), re-read every few seconds.")
    var keygroupFromRedis = false

    @OptionGroup var redis: RedisOptions

    @Option(help: ArgumentHelp("With --keygroup-from-redis: seconds between reads of the key group.", valueName: "seconds"))
    var keygroupPollInterval: Double = 2

    @Flag(help: "Take the viewer's address from the first X-Forwarded-For entry (only behind a proxy you trust); default: the TCP peer's address.")
    var trustXForwardedFor = false

    @Option(help: ArgumentHelp("Cache-Control of files served from --root (default \"\(EdgeOptions.defaultCacheControl)\"); with --origin, sent only when the origin sends none.", valueName: "value"))
    var cacheControl: String?

    @Option(help: ArgumentHelp("trace, debug, info (one line per request), notice (refusals and key changes), warning, error or critical.", valueName: "level"))
    var logLevel: String = "info"

    func validate() throws {
        switch (root, origin) {
        case (nil, nil): throw ValidationError("give --root DIR (serve files) or --origin URL (forward to an origin)")
        case (_?, _?): throw ValidationError("give only one of --root and --origin")
        default: break
        }
        if let root, root.isEmpty { throw ValidationError("--root is empty") }
        guard HTTPServer.parseAddress(listen) != nil else {
            throw ValidationError("--listen \(listen) is not HOST:PORT (e.g. 127.0.0.1:8080)")
        }
        switch (publicKeys.isEmpty, keygroupFromRedis) {
        case (true, false): throw ValidationError("give --public-key ID=FILE (repeatable) or --keygroup-from-redis: the edge needs the keys it trusts")
        case (false, true): throw ValidationError("give either --public-key or --keygroup-from-redis, not both")
        default: break
        }
        if !keygroupFromRedis && (redis.redis != nil || redis.namespace != nil) {
            throw ValidationError("--redis and --namespace are used only with --keygroup-from-redis")
        }
        for spec in publicKeys {
            guard let eq = spec.firstIndex(of: "="), eq != spec.startIndex, spec.index(after: eq) != spec.endIndex else {
                throw ValidationError("--public-key \(spec) is not ID=FILE (the CloudFront key id, '=', the public key PEM file)")
            }
            let id = String(spec[..<eq])
            guard KeyID.isValid(id) else { throw ValidationError("--public-key \(spec): \"\(id)\" is not a valid key id (\(KeyID.rule))") }
        }
        guard keygroupPollInterval > 0 && keygroupPollInterval <= 3600 else {
            throw ValidationError("--keygroup-poll-interval must be between 0 and 3600 seconds")
        }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level \(logLevel) is not one of trace, debug, info, notice, warning, error, critical")
        }
        if let cacheControl, cacheControl.contains(where: { $0 == "\r" || $0 == "\n" }) {
            throw ValidationError("--cache-control must be one line")
        }
    }

    func run() async throws {
        Logging.bootstrapStderr(level: Logger.Level(rawValue: logLevel) ?? .info)
        let logger = Logger(label: "cfsign.edge")
        let (host, port) = HTTPServer.parseAddress(listen)!

        // Keys first: a bad key file is a start-up error, not a 403 later.
        let trusted = TrustedKeys()
        var reloader: KeyGroupReloader?
        if keygroupFromRedis {
            let url = try redis.redisURL
            let ns = try redis.ns
            let r = KeyGroupReloader(url: url, namespace: ns, keys: trusted, interval: keygroupPollInterval, logger: logger, kms: AWSKMSKeys())
            do { try await r.loadInitial() } catch {
                throw Terminal.fail(nil, "edge not started: cannot read the key group from Redis at \(url): \(RedisOptions.explain(error.message))")
            }
            reloader = r
        } else {
            var keys: [String: PublicKey] = [:]
            for spec in publicKeys {
                let eq = spec.firstIndex(of: "=")!
                let id = String(spec[..<eq])
                let file = String(spec[spec.index(after: eq)...])
                if keys[id] != nil { throw Terminal.fail(nil, "edge not started: --public-key gives key id \(id) twice") }
                do { keys[id] = try PublicKey.load(file: file) } catch {
                    throw Terminal.fail(nil, "edge not started: --public-key \(id)=\(file): \(error.description)")
                }
            }
            trusted.replace(keys)
        }

        let options = EdgeOptions(
            backend: root.map { .root($0) } ?? .origin(origin!),
            cacheControl: cacheControl ?? EdgeOptions.defaultCacheControl,
            originFallbackCacheControl: cacheControl,
            trustXForwardedFor: trustXForwardedFor)
        let handler: EdgeHandler
        do { handler = try EdgeHandler(options: options, keys: trusted, logger: logger) } catch {
            throw Terminal.fail(nil, "edge not started: \(error.message)")
        }

        let server: HTTPServer
        do {
            server = try await HTTPServer.start(host: host, port: port, limits: Self.httpLimits(logger: logger), logger: logger) { request in
                await handler.respond(to: request)
            }
        } catch {
            let text = "\(error)"
            var why = text
            if text.contains("Address already in use") { why = "the port is in use (another cfsign edge or server?); choose another --listen port, or port 0 for any free one" }
            else if text.contains("Cannot assign requested address") { why = "\(host) is not an address of this machine" }
            else if text.contains("Permission denied") { why = "permission denied (ports below 1024 need privileges)" }
            throw Terminal.fail(nil, "edge not started: cannot listen on \(listen): \(why)")
        }
        let shownHost = host.contains(":") ? "[\(host)]" : host
        let base = "http://\(shownHost):\(server.port)"
        // Log first, then print the URL: whoever waits for the URL on stdout finds the log complete.
        logger.notice("cfsign edge listening on \(base), serving \(handler.servingDescription)", metadata: [
            "trusted_key_ids": "\(trusted.ids.isEmpty ? "none yet" : trusted.ids.joined(separator: ","))",
            "keys_from": "\(keygroupFromRedis ? "redis key group" : "--public-key")",
            "viewer_ip_from": "\(trustXForwardedFor ? "X-Forwarded-For (first entry)" : "TCP peer")",
        ])
        // From here on SIGINT/SIGTERM belong to `Lifecycle`: the first stops the edge cleanly.
        // The URL is printed by a service, so the group's signal handlers are in place by then: a
        // stop right after whoever waits for the URL reads it is a clean one.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: server), .init(service: PrintLine(base))]
        if let reloader { services.append(.init(service: reloader)) }
        try await Lifecycle.run(services, logger: logger)
        logger.notice("cfsign edge stopped")
    }

    /// The edge's HTTP limits: more connections than a worker's (viewers and players hold several
    /// each) and a longer keep-alive, the same request timeout and head bound, and the cap kept
    /// under the open-files limit (raised to the hard limit first) with room for file and origin
    /// reads.
    static func httpLimits(logger: Logger) -> HTTPServerLimits {
        var limits = HTTPServerLimits(maxConnections: 1024, idleTimeout: 60, headerTimeout: 10)
        if let files = OpenFileLimit.raiseToHardLimit() {
            limits.maxConnections = OpenFileLimit.connectionCap(wanted: limits.maxConnections, limit: files)
            logger.debug("open files limit", metadata: ["open_files_limit": "\(files)", "max_connections": "\(limits.maxConnections)"])
        }
        return limits
    }
}

/// Prints one line on stdout when the service group starts, then waits for the group to stop.
private struct PrintLine: Service {
    let line: String
    init(_ line: String) { self.line = line }

    func run() async throws {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
        try? await gracefulShutdown()
    }
}

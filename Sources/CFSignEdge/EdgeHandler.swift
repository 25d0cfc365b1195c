import CFSignCore
import CFSignCrypto
import CFSignHTTP
import Foundation
import Logging

/// What `cfsign edge` serves and how it trusts viewers.
public struct EdgeOptions: Sendable {
    public enum Backend: Sendable {
        /// Files under this folder (made a real path by `EdgeHandler`).
        case root(String)
        /// An origin URL (`http://127.0.0.1:9000/bucket`); requests are forwarded to it.
        case origin(String)
    }

    public var backend: Backend
    /// Cache-Control of files served from `root`.
    public var cacheControl: String
    /// Cache-Control sent for origin responses that carry none (only when the operator gave one).
    public var originFallbackCacheControl: String?
    /// Take the viewer's address from the first `X-Forwarded-For` entry (the edge sits behind a proxy).
    public var trustXForwardedFor: Bool

    public static let defaultCacheControl = "private, max-age=3600"

    public init(backend: Backend, cacheControl: String = EdgeOptions.defaultCacheControl, originFallbackCacheControl: String? = nil,
                trustXForwardedFor: Bool = false) {
        self.backend = backend
        self.cacheControl = cacheControl
        self.originFallbackCacheControl = originFallbackCacheControl
        self.trustXForwardedFor = trustXForwardedFor
    }
}

/// Why the edge cannot start with the options given.
public struct EdgeSetupError: Error, Sendable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A local CloudFront stand-in with "Restrict viewer access" on: every GET/HEAD must carry a valid
/// signed URL (query) or signed-cookie set, checked as `cfsign verify` checks; the signing parameters
/// are stripped before the file lookup or the origin request, as CloudFront strips them.
public final class EdgeHandler: Sendable {
    private enum Serving: Sendable {
        case files(FileBackend)
        case origin(OriginBackend)
    }

    public let options: EdgeOptions
    public let keys: TrustedKeys
    private let serving: Serving
    private let logger: Logger
    private let now: @Sendable () -> Int64

    public init(options: EdgeOptions, keys: TrustedKeys, logger: Logger,
                now: @escaping @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970) }) throws(EdgeSetupError) {
        var options = options
        switch options.backend {
        case .root(let dir):
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir) else {
                throw EdgeSetupError("--root \(dir) does not exist")
            }
            guard isDir.boolValue else { throw EdgeSetupError("--root \(dir) is not a folder") }
            guard let real = FileBackend.realPath(dir) else { throw EdgeSetupError("--root \(dir) cannot be resolved") }
            guard (try? FileManager.default.contentsOfDirectory(atPath: real)) != nil else {
                throw EdgeSetupError("--root \(dir) cannot be read (permissions?)")
            }
            options.backend = .root(real)
            serving = .files(FileBackend(root: real, cacheControl: options.cacheControl))
        case .origin(let text):
            guard let url = URL(string: text), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https",
                  let host = url.host, !host.isEmpty else {
                throw EdgeSetupError("--origin \(text) is not an http:// or https:// URL with a host")
            }
            guard url.query == nil, url.fragment == nil else {
                throw EdgeSetupError("--origin \(text) must not have a query or fragment (give scheme, host, port and an optional path)")
            }
            serving = .origin(OriginBackend(base: text, fallbackCacheControl: options.originFallbackCacheControl))
        }
        self.options = options
        self.keys = keys
        self.logger = logger
        self.now = now
    }

    /// One sentence naming what is served, for the start-up log.
    public var servingDescription: String {
        switch serving {
        case .files(let files): return "files under \(files.root)"
        case .origin(let origin): return "origin \(origin.base)"
        }
    }

    public func respond(to request: HTTPRequest) async -> HTTPResponse {
        var response = await handle(request)
        response.headers.append(("Date", HTTPDate.format(now())))
        response.headers.append(("Server", "cfsign-edge"))
        return response
    }

    private func handle(_ request: HTTPRequest) async -> HTTPResponse {
        let isHead = request.method == "HEAD"
        guard request.method == "GET" || isHead else {
            logger.notice("405 \(request.method) \(request.path): only GET and HEAD are served", metadata: ["viewer": "\(request.remoteAddress ?? "?")"])
            return EdgeResponses.methodNotAllowed(request.method)
        }
        func badRequest(_ message: String) -> HTTPResponse {
            logger.notice("400 \(request.method) \(request.path) viewer \(request.remoteAddress ?? "?"): \(message)")
            return EdgeResponses.badRequest(message)
        }
        guard let uri = Self.originForm(request.uri) else {
            return badRequest("the request target \(request.uri) is not a path")
        }
        guard let host = request.header("Host")?.trimmingCharacters(in: .whitespaces) else {
            return badRequest("the request has no Host header; the URL checked against the signature is http:// + Host + path")
        }
        guard Self.isValidHost(host) else { return badRequest("the Host header \"\(host)\" is not a host[:port]") }

        // What CloudFront checks: http:// + Host + path + the query without the signing parameters.
        let (forwardURI, signingParameters) = SignedRequest.split(uri)
        let checkedURL = "http://" + host + forwardURI
        let viewer = viewerAddress(request)
        let signed: SignedRequest
        do throws(Refusal) {
            if signingParameters.isEmpty {
                signed = try SignedRequest.parse(url: checkedURL, cookies: Self.cookies(request))
            } else {
                signed = try SignedRequest.parse(signedURL: "http://" + host + uri)
            }
            do {
                try keys.verifier.verify(signed, now: now(), viewerIP: viewer.ipv4)
            } catch where error.reason == .needsViewerIP {
                let range = signed.policy.ip.map(\.description) ?? "?"
                throw Refusal(.needsViewerIP, "the policy allows only viewers from \(range); the viewer's address \(viewer.text ?? "(unknown)") is not an IPv4 address")
            } catch where error.reason == .badSignature && signed.policy.kind == .canned {
                // A canned policy is signed for one URL: show the one checked (a Host or port mismatch shows here).
                throw Refusal(.badSignature, error.message + "; the URL checked was \(checkedURL)")
            } catch where error.reason == .unknownKey && keys.ids.isEmpty {
                throw Refusal(.unknownKey, "Key-Pair-Id \(signed.keyPairID) is not a trusted key: this edge trusts no key yet (no key group loaded)")
            }
        } catch {
            let cookieNames = Self.cookies(request).map(\.name).filter { SignedRequest.cookieNames.contains($0) }
            var message = error.message
            let via: String
            if !signingParameters.isEmpty {
                via = "signed URL"
            } else if !cookieNames.isEmpty {
                via = "signed cookies (\(cookieNames.joined(separator: ", ")))"
            } else {
                via = "unsigned"
                if error.reason == .missingKeyPairID {
                    message = "the request is not signed: no signing query parameters (Expires/Policy, Signature, Key-Pair-Id) and no CloudFront-* cookies"
                }
            }
            logger.notice("403 \(error.reason.rawValue) \(request.method) \(checkedURL) viewer \(viewer.text ?? "?") [\(via)]: \(message)")
            return EdgeResponses.refused(error)
        }

        let response: HTTPResponse
        var problem: String?
        switch serving {
        case .files(let files):
            response = files.respond(forwardURI: forwardURI, request: request, isHead: isHead)
        case .origin(let origin):
            (response, problem) = await origin.respond(forwardURI: forwardURI, request: request, isHead: isHead)
        }
        let via = signingParameters.isEmpty ? "signed cookies" : "signed URL"
        if let refusal = response.headers.first(where: { $0.name == EdgeResponses.refusalHeader })?.value {
            logger.notice("\(response.status) \(refusal) \(request.method) \(checkedURL) viewer \(viewer.text ?? "?"): the path is not served (valid \(via), key \(signed.keyPairID))")
        } else if let problem {
            logger.error("\(response.status) \(request.method) \(checkedURL) viewer \(viewer.text ?? "?"): \(problem)")
        } else {
            logger.info("\(response.status) \(request.method) \(checkedURL) viewer \(viewer.text ?? "?") (\(via), key \(signed.keyPairID), \(signed.policy.kind.rawValue) policy, \(signed.hash.rawValue))")
        }
        return response
    }

    /// The viewer's address: the TCP peer, or with `--trust-x-forwarded-for` the first
    /// `X-Forwarded-For` entry (the peer when there is none).
    func viewerAddress(_ request: HTTPRequest) -> (text: String?, ipv4: UInt32?) {
        var text = request.remoteAddress
        if options.trustXForwardedFor, let first = request.headers("X-Forwarded-For").first?.split(separator: ",").first {
            var entry = first.trimmingCharacters(in: .whitespaces)
            // "203.0.113.7:51234" (some proxies add the port to IPv4 entries)
            if entry.filter({ $0 == ":" }).count == 1, let colon = entry.firstIndex(of: ":") { entry = String(entry[..<colon]) }
            if !entry.isEmpty { text = entry }
        }
        guard var address = text else { return (nil, nil) }
        if address.lowercased().hasPrefix("::ffff:"), address.contains(".") { address = String(address.dropFirst(7)) }
        return (text, IPv4Range.parseAddress(address))
    }

    /// The request target as a path: absolute-form (`http://host/p`) becomes `/p`; `*` and other
    /// forms are not paths. A fragment (never sent by browsers) is dropped.
    static func originForm(_ target: String) -> String? {
        var uri = target
        if let hash = uri.firstIndex(of: "#") { uri = String(uri[..<hash]) }
        let lower = uri.lowercased()
        if lower.hasPrefix("http://") || lower.hasPrefix("https://") {
            let afterScheme = uri[uri.index(uri.firstIndex(of: ":")!, offsetBy: 3)...]
            guard let slash = afterScheme.firstIndex(where: { $0 == "/" || $0 == "?" }) else { return "/" }
            uri = afterScheme[slash] == "?" ? "/" + afterScheme[slash...] : String(afterScheme[slash...])
        }
        return uri.hasPrefix("/") ? uri : nil
    }

    /// host, host:port, [v6]:port; nothing that could change the URL's meaning.
    static func isValidHost(_ host: String) -> Bool {
        !host.isEmpty && host.utf8.count <= 255 && host.utf8.allSatisfy { b in
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2E || b == 0x2D || b == 0x3A || b == 0x5B || b == 0x5D || b == 0x5F
        }
    }

    /// The request's cookies (`a=b; c=d`, every Cookie header), quotes around values removed.
    static func cookies(_ request: HTTPRequest) -> [(name: String, value: String)] {
        var out: [(name: String, value: String)] = []
        for header in request.headers("Cookie") {
            for part in header.split(separator: ";") {
                let pair = part.trimmingCharacters(in: .whitespaces)
                guard let eq = pair.firstIndex(of: "=") else { continue }
                let name = pair[..<eq].trimmingCharacters(in: .whitespaces)
                var value = pair[pair.index(after: eq)...].trimmingCharacters(in: .whitespaces)
                if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
                out.append((name, value))
            }
        }
        return out
    }
}

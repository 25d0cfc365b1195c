import ArgumentParser
import CFSignCore
import CFSignCrypto
import Foundation

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a signed URL (or signed cookies) the way CloudFront would, and say why it would be refused.",
        usage: """
            cfsign verify <url> --public-key <file> ... [--ip <addr>] [--at <time>]
              [--cookie <name=value> ...] [<options>]
            """,
        discussion: """
            Checks the key id, the signature against the public key, the policy (expiry, start \
            time, IP range) and that the URL matches the policy's resource, wildcards included. \
            Exit 0: CloudFront would accept; exit 1: it would refuse (the reason on stderr). A \
            policy with an IP condition needs --ip.

            Examples:
              cfsign verify "$url" --public-key keys/my-first-key.pub.pem
              cfsign verify "$url" --ip 203.0.113.7 --at 2027-03-01T00:00:00Z \\
                --public-key K2JCJMDEHXQW5F=keys/my-first-key.pub.pem
              cfsign verify https://d111111abcdef8.cloudfront.net/a.pdf \\
                --cookie CloudFront-Policy=... --cookie CloudFront-Signature=... \\
                --cookie CloudFront-Key-Pair-Id=K2JCJMDEHXQW5F \\
                --public-key keys/my-first-key.pub.pem
            """
    )

    @Argument(help: "The signed URL, or with --cookie the URL requested.")
    var url: String

    @Option(name: .customLong("cookie"), help: ArgumentHelp("A signed cookie, NAME=VALUE (repeat for each CloudFront-* cookie).", valueName: "name=value"))
    var cookies: [String] = []

    @Option(help: ArgumentHelp("Public key PEM as uploaded to CloudFront; ID=FILE to tie it to a key id (repeatable).", valueName: "file"))
    var publicKey: [String] = []

    @Option(help: ArgumentHelp("The viewer's IPv4 address.", valueName: "addr"))
    var ip: String?

    @Option(parsing: .unconditional, help: ArgumentHelp("Check as of this time (\(Timestamps.help)); default now.", valueName: "time"), transform: TimeArgument.parse)
    var at: TimeArgument?

    @Flag(help: "Print the verdict as JSON on stdout.")
    var json = false

    func validate() throws {
        if publicKey.isEmpty { throw ValidationError("give --public-key FILE (the public key uploaded to CloudFront)") }
        if let ip, IPv4Range.parseAddress(ip) == nil { throw ValidationError("--ip \(ip) is not an IPv4 address") }
        for c in cookies where !c.contains("=") { throw ValidationError("--cookie \(c) is not NAME=VALUE") }
    }

    func run() throws {
        var keys: [String: PublicKey] = [:]
        var any: PublicKey?
        for spec in publicKey {
            var id: String?
            var file = spec
            if let eq = spec.firstIndex(of: "="), !FileManager.default.fileExists(atPath: spec) {
                id = String(spec[..<eq])
                file = String(spec[spec.index(after: eq)...])
            }
            do {
                let key = try PublicKey.load(file: file)
                if let id { keys[id] = key } else { any = key }
            } catch {
                throw Terminal.fail(nil, error.description)
            }
        }
        let now = at?.epochSeconds ?? Clock.now()
        let viewer = ip.flatMap { IPv4Range.parseAddress($0) }
        do throws(Refusal) {
            let request: SignedRequest
            if cookies.isEmpty {
                request = try SignedRequest.parse(signedURL: url)
            } else {
                let pairs = cookies.map { c -> (name: String, value: String) in
                    let eq = c.firstIndex(of: "=")!
                    return (String(c[..<eq]), String(c[c.index(after: eq)...]))
                }
                request = try SignedRequest.parse(url: url, cookies: pairs)
            }
            try LinkVerifier(keys: keys, anyID: any).verify(request, now: now, viewerIP: viewer)
            let p = request.policy
            var summary = "CloudFront would accept: key \(request.keyPairID), \(p.kind.rawValue) policy, \(request.hash.rawValue), valid until \(Timestamps.iso8601(p.expiresAt)) (\(Durations.describe(p.expiresAt.subtractingSaturating(now))) left)"
            if let s = p.startsAt { summary += ", from \(Timestamps.iso8601(s))" }
            if let r = p.ip { summary += ", viewers in \(r)" }
            if p.kind == .custom { summary += ", resource \(p.resource)" }
            if json {
                var w = JSONWriter()
                w.beginObject()
                w.field("accepted", true)
                w.field("key_id", request.keyPairID)
                w.field("policy", p.kind.rawValue)
                w.field("resource", p.resource)
                w.field("expires_at", p.expiresAt)
                w.endObject()
                Terminal.result(w.string)
            } else {
                Terminal.result(summary)
            }
        } catch {
            if json {
                var w = JSONWriter()
                w.beginObject()
                w.field("accepted", false)
                w.field("reason", error.reason.rawValue)
                w.field("message", error.message)
                w.endObject()
                Terminal.result(w.string)
            }
            throw Terminal.fail(nil, "CloudFront would refuse (\(error.reason.rawValue)): \(error.message)")
        }
    }
}

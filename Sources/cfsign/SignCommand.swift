import ArgumentParser
import CFSignCore
import CFSignCrypto
import Foundation

/// The signing key flags shared by the local signing commands.
struct LocalKeyOptions: ParsableArguments {
    @Option(help: ArgumentHelp("CloudFront public key id: the Key-Pair-Id in the link.", valueName: "id"))
    var keyId: String

    @Option(help: ArgumentHelp("Private key file: RSA-2048 or EC P-256, PEM (PKCS#1, SEC1 or PKCS#8).", valueName: "file"))
    var privateKey: String?

    @Option(help: ArgumentHelp("Instead of --private-key: a key in an HSM, as a PKCS#11 URI: pkcs11:token=...;object=... with ?module-path=... and &pin-source=file:..., or a key in AWS KMS: awskms:<key ARN or id> (SHA256 only; see cfsign keys public --help).", valueName: "uri"))
    var privateKeyUri: String?

    @Option(parsing: .unconditional, help: ArgumentHelp("Refuse links that live longer than this (\(Durations.help)); no limit by default.", valueName: "duration"), transform: DurationArgument.parse)
    var maxLifetime: DurationArgument?

    func validate() throws {
        switch (privateKey, privateKeyUri) {
        case (nil, nil): throw ValidationError("give --private-key FILE or --private-key-uri pkcs11:... / awskms:...")
        case (_?, _?): throw ValidationError("give --private-key or --private-key-uri, not both")
        default: break
        }
    }

    /// The key (a file, or in an HSM), or exit 1 naming the file or URI part and the reason.
    func loadKey() throws -> any SigningKey {
        guard KeyID.isValid(keyId) else {
            throw Terminal.fail(.unknownKey, "--key-id \"\(keyId)\" is not a valid key id (\(KeyID.rule))")
        }
        if let privateKey {
            do {
                return try PrivateKey.load(file: privateKey)
            } catch {
                throw Terminal.fail(.noSigningKey, error.description)
            }
        }
        return try Keys.loadURI(privateKeyUri ?? "", option: "--private-key-uri")
    }

    /// Limits with the digests the key (this OpenSSL build, or the HSM) signs with.
    func limits(defaultHash: HashAlgorithm = .sha1, key: any SigningKey) -> SigningLimits {
        SigningLimits(maximumLifetime: maxLifetime?.seconds, defaultHash: defaultHash, supportedHashes: key.signableHashes)
    }
}

struct Sign: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Sign one CloudFront URL or cookie set locally, like `aws cloudfront sign` (no Redis).",
        // Written out: the generated one is a single line of over 200 columns.
        usage: """
            cfsign sign <url> --key-id <id> --private-key <file>
              (--expires-at <time> | --expires-in <duration>) [<options>]
            """,
        discussion: """
            A canned policy is used unless --starts-at, --ip or --resource asks for a custom one. \
            Plain output is the signed URL, or one Name=value line per cookie; --json prints the \
            reply object a worker would push. Bad input exits 1 with the contract's error code on \
            stderr.

            Examples:
              cfsign sign https://d111111abcdef8.cloudfront.net/invoices/42.pdf \\
                --key-id K2JCJMDEHXQW5F --private-key keys/my-first-key.pem \\
                --expires-in 30d
              cfsign sign https://d111111abcdef8.cloudfront.net/reports/q3.pdf \\
                --key-id K2JCJMDEHXQW5F --private-key keys/my-first-key.pem \\
                --expires-in 10m --cookies \\
                --resource 'https://d111111abcdef8.cloudfront.net/reports/*'
            """
    )

    @OptionGroup var policy: PolicyOptions
    @OptionGroup var key: LocalKeyOptions

    func run() throws {
        let privateKey = try key.loadKey()
        let signer = LinkSigner(limits: key.limits(key: privateKey))
        do {
            let request = try policy.request(keyID: nil)
            let link = try signer.sign(request, key: privateKey, keyID: key.keyId, now: Clock.now())
            if policy.json {
                Terminal.result(String(decoding: ReplyEncoder.success(id: "local", link: link), as: UTF8.self))
            } else {
                Terminal.result(link.plainText)
            }
        } catch {
            throw Terminal.fail(error)
        }
    }
}

struct SignBatch: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sign-batch",
        abstract: "Sign contract jobs from stdin (one JSON object per line) locally; print one reply per line.",
        usage: "cfsign sign-batch --key-id <id> --private-key <file> [<options>]",
        discussion: """
            Each line is a job as PROTOCOL.md describes it (id, reply_to, url, expires_at or \
            expires_in, ...). The reply a worker would push is printed for each, in order; a job a \
            worker would send to the dead list prints its dead entry. A job's key_id must be \
            --key-id. Exit 0 once all are read.

            Examples:
              cfsign sign-batch --key-id K2JCJMDEHXQW5F \\
                --private-key keys/my-first-key.pem < jobs.jsonl > replies.jsonl
            """
    )

    @OptionGroup var key: LocalKeyOptions

    @Option(help: ArgumentHelp("Namespace whose reply prefix jobs' reply_to must use.", valueName: "ns"))
    var namespace: String = "cfsign"

    @Option(help: ArgumentHelp("Digest for jobs that name none.", valueName: "SHA1|SHA256"))
    var defaultHash: HashAlgorithm = .sha1

    func run() throws {
        let privateKey = try key.loadKey()
        let ns: Namespace
        do { ns = try Namespace(namespace) } catch { throw ValidationError(error.description) }
        let signer = LinkSigner(limits: key.limits(defaultHash: defaultHash, key: privateKey))
        var out = [UInt8]()
        while let line = readLine(strippingNewline: true) {
            if line.isEmpty { continue }
            let reply: [UInt8]
            switch JobParser.parse(Array(line.utf8), namespace: ns) {
            case .dead(let error):
                reply = ReplyEncoder.dead(error: error, job: Array(line.utf8), worker: "sign-batch", atMilliseconds: Clock.nowMilliseconds())
            case .refused(let id, _, let error):
                reply = ReplyEncoder.failure(id: id, error: error)
            case .job(let job):
                if let requested = job.request.keyID, requested != key.keyId {
                    reply = ReplyEncoder.failure(id: job.id, error: SigningError(.unknownKey, "key_id \"\(requested)\" is not the key given with --key-id"))
                } else {
                    do {
                        let link = try signer.sign(job.request, key: privateKey, keyID: key.keyId, now: Clock.now())
                        reply = ReplyEncoder.success(id: job.id, link: link)
                    } catch {
                        reply = ReplyEncoder.failure(id: job.id, error: error)
                    }
                }
            }
            out.append(contentsOf: reply)
            out.append(0x0A)
            if out.count > 1 << 16 { FileHandle.standardOutput.write(Data(out)); out.removeAll(keepingCapacity: true) }
        }
        FileHandle.standardOutput.write(Data(out))
    }
}

enum Clock {
    static func now() -> Int64 { Int64(Date().timeIntervalSince1970) }
    static func nowMilliseconds() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }
}

import ArgumentParser
import CFSignCore
import CFSignCrypto
import Foundation
import SystemPackage
import CFSignKMS

struct Keys: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage signing keys.",
        subcommands: [Generate.self, Public.self]
    )

    /// A key named by a `pkcs11:` or `awskms:` URI, or exit 1 with the reason (naming the URI part
    /// at fault, or the AWS error code). The CLI is run by an operator, so `pin-value` is accepted
    /// here (the worker needs its opt-in).
    static func loadURI(_ text: String, option: String) throws -> any SigningKey {
        let source: KeyGroupDocument.KeySource
        do {
            if text.hasPrefix("awskms:") {
                source = .awsKMS(try KMSKeyURI(parsing: text))
            } else {
                source = .pkcs11(try PKCS11URI(parsing: text))
            }
        } catch {
            throw Terminal.fail(.noSigningKey, "\(option) \(error.reason)")
        }
        do {
            return try SigningKeyGroup.loadKey(source, id: "", options: KeyLoadOptions(allowInlineKeys: true, kms: AWSKMSKeys()))
        } catch {
            throw Terminal.fail(.noSigningKey, error.description)
        }
    }

    struct Public: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the public key PEM of a key in an HSM or in AWS KMS, to upload to CloudFront.",
            discussion: """
                The key never leaves the token or KMS: the public key is read from the token (its \
                public key object, or the private key's public attributes), or from KMS \
                (GetPublicKey; region from the ARN or AWS_REGION, credentials as the AWS SDKs find \
                them in the environment, the shared files or a web identity token).

                Examples:
                  uri='pkcs11:token=cfsign;object=K2JCJMDEHXQW5F'
                  uri+='?module-path=/usr/lib/softhsm/libsofthsm2.so'
                  uri+='&pin-source=file:/etc/cfsign/pin'
                  cfsign keys public --uri "$uri" > K2JCJMDEHXQW5F.pub.pem
                  arn=arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd
                  cfsign keys public --uri "awskms:$arn" > kms.pub.pem
                """
        )

        @Option(help: ArgumentHelp("The key's PKCS#11 URI (RFC 7512), or awskms:<key ARN or id>.", valueName: "uri"))
        var uri: String

        func run() throws {
            let key = try Keys.loadURI(uri, option: "--uri")
            var pem = key.publicKey.pem
            while pem.hasSuffix("\n") { pem.removeLast() }
            Terminal.result(pem)
            Terminal.info("\(key.type.rawValue) key in \(key.location); upload this public key to CloudFront (Key management > Public keys)")
        }
    }

    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a new CloudFront signing key pair: the private key (mode 0600) and the public key to upload.",
            discussion: """
                Writes DIR/NAME.pem (private, PKCS#8, mode 0600) and DIR/NAME.pub.pem (public, to \
                upload to CloudFront). Existing files are never overwritten. Prints the two paths on \
                stdout.

                Examples:
                  cfsign keys generate --type ec --out keys --name my-first-key
                  cfsign keys generate --type rsa --out /etc/cfsign/keys
                """
        )

        enum KeyKind: String, ExpressibleByArgument, CaseIterable {
            case rsa, ec
        }

        @Option(help: "rsa (RSA-2048) or ec (EC P-256; smaller and faster signatures).")
        var type: KeyKind

        @Option(help: ArgumentHelp("Folder to write the key files into (made if missing).", valueName: "dir"))
        var out: String

        @Option(help: ArgumentHelp("File name stem; default cfsign-<type>-<date>.", valueName: "name"))
        var name: String?

        func validate() throws {
            if let name, name.isEmpty || name.contains("/") || name.hasPrefix(".") {
                throw ValidationError("--name must be a plain file name without '/' and not starting with '.'")
            }
        }

        func run() throws {
            let stem = name ?? "cfsign-\(type.rawValue)-\(Timestamps.iso8601(Clock.now()).prefix(10))"
            let privatePath = (out as NSString).appendingPathComponent(stem + ".pem")
            let publicPath = (out as NSString).appendingPathComponent(stem + ".pub.pem")
            do {
                try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw Terminal.fail(nil, "cannot make folder \(out): \(error.localizedDescription)")
            }
            for path in [privatePath, publicPath] where FileManager.default.fileExists(atPath: path) {
                throw Terminal.fail(nil, "\(path) exists; cfsign never overwrites a key file (choose another --name or --out)")
            }
            let key: PrivateKey
            do { key = try PrivateKey.generate(type == .rsa ? .rsa2048 : .ecP256) } catch {
                throw Terminal.fail(nil, error.description)
            }
            var pem = key.privateKeyPEM()
            defer { for i in pem.indices { pem[i] = 0 } }
            do {
                try writeNew(privatePath, pem, mode: 0o600)
                try writeNew(publicPath, Array(key.publicKeyPEM.utf8), mode: 0o644)
            } catch {
                try? FileManager.default.removeItem(atPath: privatePath)
                throw Terminal.fail(nil, "\(error)")
            }
            Terminal.result(privatePath)
            Terminal.result(publicPath)
            Terminal.info("""
                Made an \(key.type.rawValue) key pair.
                Next:
                  1. In the CloudFront console (Key management > Public keys), create a public key from
                     \(publicPath); note its ID (e.g. K2JCJMDEHXQW5F).
                  2. Add that public key to a key group, and set the key group as a trusted key group of the
                     distribution's behaviour (Restrict viewer access).
                  3. Sign a first link:
                     cfsign sign https://YOUR-DISTRIBUTION.cloudfront.net/path \\
                       --key-id ID --private-key \(privatePath) --expires-in 1h
                Keep \(privatePath) secret (mode 0600); never commit it.
                """)
            if !Self.onPath("cfsign") {
                Terminal.info("(cfsign is not on your PATH: scripts/install in the cfsign checkout links it into ~/.local/bin; see README.md)")
            }
        }

        /// Whether `name` is an executable in a folder of $PATH, so the printed hint's bare
        /// `cfsign` would run as pasted.
        static func onPath(_ name: String) -> Bool {
            let folders = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":")
            return folders.contains { access("\($0)/\(name)", X_OK) == 0 }
        }

        /// Creates the file exclusively (O_EXCL) with its final mode, so no one reads a partial key.
        func writeNew(_ path: String, _ bytes: [UInt8], mode: mode_t) throws {
            func failed(_ error: any Error) -> WriteError { WriteError(path: path, reason: (error as? Errno)?.description ?? "\(error)") }
            let fd: FileDescriptor
            do {
                fd = try FileDescriptor.open(FilePath(path), .writeOnly, options: [.create, .exclusiveCreate, .closeOnExec], permissions: FilePermissions(rawValue: mode))
            } catch { throw failed(error) }
            defer { try? fd.close() }
            _ = fchmod(fd.rawValue, mode)
            do { try fd.writeAll(bytes) } catch { throw failed(error) }
            guard fsync(fd.rawValue) == 0 else { throw WriteError(path: path, reason: String(cString: strerror(errno))) }
        }

        struct WriteError: Error, CustomStringConvertible {
            let path: String
            let reason: String
            var description: String { "cannot write \(path): \(reason)" }
        }
    }
}

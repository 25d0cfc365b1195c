import ArgumentParser
import CFSignAdmin
import CFSignCore
import CFSignCrypto
import Foundation
import CFSignKMS

struct KeyGroupCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keygroup",
        abstract: "Show, set or rotate the key group the fleet signs with ({NS}:keygroup).",
        discussion: """
            Workers load a new group completely before they swap it in, and refuse a broken one \
            whole (cfsign status shows refusals). Versions only grow: set and rotate pick or require \
            a version above both the stored group and every version a live worker reports.

            Examples:
              cfsign keygroup show
              cfsign keygroup set group.json --check-files
              cfsign keygroup rotate --key-id KNEWKEY \\
                --private-key-file /etc/cfsign/keys/KNEWKEY.pem \\
                --public-key KNEWKEY.pub.pem
            """,
        subcommands: [Show.self, Set.self, Rotate.self]
    )

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the key group in Redis and which workers sign with which version.")

        @OptionGroup var redis: RedisOptions
        @Flag(help: "Print JSON: {\"keygroup\": <group or null>, \"workers\": [{id, keygroup_version, keygroup_refusal}]}.")
        var json = false

        func run() throws {
            let ns = try redis.ns
            let connection = try redis.connect()
            let fleet: FleetSnapshot
            do { fleet = try FleetSnapshot.read(connection, ns) } catch { throw Terminal.fail(nil, "reading the fleet: \(error.message)") }
            if json {
                var w = JSONWriter()
                w.beginObject()
                w.key("keygroup")
                if let value = fleet.redactedKeyGroup { w.value(value) } else { w.null() }
                w.key("workers")
                w.beginArray()
                for worker in fleet.live {
                    w.beginObject()
                    w.field("id", worker.id)
                    w.key("keygroup_version")
                    if let v = worker.keyGroupVersion { w.value(v) } else { w.null() }
                    w.key("keygroup_refusal")
                    w.value(worker.refusal?.jsonValue ?? .null)
                    w.endObject()
                }
                w.endArray()
                w.endObject()
                Terminal.result(w.string)
                return
            }
            guard let bytes = fleet.keyGroup else {
                Terminal.result("no key group in \(ns.keyGroup); store one with: cfsign keygroup set FILE")
                return
            }
            let document: KeyGroupDocument
            do { document = try KeyGroupDocument(json: bytes) } catch {
                throw Terminal.fail(nil, "the key group in \(ns.keyGroup) is not valid: \(error.reason); store a good one with cfsign keygroup set FILE")
            }
            var lines = ["key group version \(document.version), active key \(document.active)"]
            for key in document.keys {
                let source: String
                switch key.source {
                case .file(let path): source = "file \(path)"
                case .inlinePEM: source = "inline PEM"
                case .pkcs11(let uri): source = "HSM \(uri)"
                case .awsKMS(let uri): source = "AWS KMS \(uri)"
                }
                lines.append("  \(key.id)\(key.id == document.active ? " (active)" : "")  \(source)\(key.publicKeyPEM == nil ? "" : ", public key given")")
            }
            lines.append("workers: \(fleet.live.count) live")
            for worker in fleet.live {
                var line = "  \(worker.id)  version \(worker.keyGroupVersion.map(String.init) ?? "none")"
                if let r = worker.refusal { line += "  refused version \(r.version.map(String.init) ?? "?"): \(r.reason)" }
                lines.append(line)
            }
            Terminal.result(lines.joined(separator: "\n"))
        }
    }

    struct Set: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate a key group file and store it (SET + PUBLISH in one transaction).",
            usage: "cfsign keygroup set <file> [--check-files] [<options>]",
            discussion: """
                FILE is the group as PROTOCOL.md shows it. "version" may be left out: the next \
                version is chosen above the stored group and every version a live worker reports; a \
                version given must be higher than those. Nothing is written when the group is refused.

                Examples:
                  cfsign keygroup set group.json
                  cfsign keygroup set group.json --check-files \\
                    --redis redis://127.0.0.1:6379 --namespace cfsign
                """
        )

        @OptionGroup var redis: RedisOptions
        @Argument(help: "Key group JSON file.") var file: String
        @Flag(help: "Also load each private key file here (run this on a worker host) and check public_key_pem pairs.")
        var checkFiles = false

        func run() throws {
            let data: Data
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: file, isDirectory: &isDirectory), isDirectory.boolValue {
                throw Terminal.fail(nil, "cannot read \(file): it is a directory; give the key group JSON file")
            }
            do { data = try Data(contentsOf: URL(fileURLWithPath: file)) } catch {
                throw Terminal.fail(nil, "cannot read \(file): \(error.localizedDescription)")
            }
            try KeyGroupWriter(redis: redis, file: file).store { store throws(KeyGroupStoreError) in
                try store.set(json: Array(data), checking: checkFiles ? KeyGroupWriter.fileCheck : nil)
            }
        }
    }

    struct Rotate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a new key the active one: next version, new key first, previous keys kept for key_id use.",
            usage: """
                cfsign keygroup rotate --key-id <id> --private-key-file <path>
                  [--public-key <file>] [--keep <n>] [<options>]
                """,
            discussion: """
                Builds the next version from the stored group: the new key becomes active and the \
                keys before it are kept (most recent first, at most --keep of them) so jobs can still \
                ask for them with key_id. Then stores it as `cfsign keygroup set` does.

                Examples:
                  cfsign keygroup rotate --key-id KNEWKEY \\
                    --private-key-file /etc/cfsign/keys/KNEWKEY.pem \\
                    --public-key KNEWKEY.pub.pem --keep 1
                """
        )

        @OptionGroup var redis: RedisOptions
        @Option(help: ArgumentHelp("CloudFront public key id of the new key.", valueName: "id")) var keyId: String
        @Option(help: ArgumentHelp("Path of the new private key on the worker hosts.", valueName: "path")) var privateKeyFile: String
        @Option(help: ArgumentHelp("The public key PEM as uploaded to CloudFront; workers check it is the private key's pair.", valueName: "file"))
        var publicKey: String?
        @Option(help: ArgumentHelp("Previous keys to keep (0-20).", valueName: "n")) var keep: Int = 2
        @Flag(help: "Also load each private key file here (run this on a worker host).") var checkFiles = false

        func validate() throws {
            guard (0...20).contains(keep) else { throw ValidationError("--keep must be 0 to 20") }
            guard KeyID.isValid(keyId) else { throw ValidationError("--key-id is not a valid key id (\(KeyID.rule))") }
            guard privateKeyFile.hasPrefix("/") else { throw ValidationError("--private-key-file must be an absolute path on the worker hosts") }
        }

        func run() throws {
            var publicPEM: String? = nil
            if let publicKey {
                do {
                    // Checked here; embedded exactly as uploaded to CloudFront.
                    _ = try PublicKey.load(file: publicKey)
                    publicPEM = try String(contentsOfFile: publicKey, encoding: .utf8)
                } catch {
                    throw Terminal.fail(nil, "\(error)")
                }
            }
            let newKey = KeyGroupDocument.Key(id: keyId, source: .file(privateKeyFile), publicKeyPEM: publicPEM)
            try KeyGroupWriter(redis: redis, file: nil).store { store throws(KeyGroupStoreError) in
                try store.rotate(to: newKey, keep: keep, checking: checkFiles ? KeyGroupWriter.fileCheck : nil)
            }
        }
    }
}

/// Runs a `KeyGroupStore` write for `keygroup set` / `rotate` and says what happened: the stored
/// version on stdout, the rest on stderr; a refusal exits 1 with its sentence.
struct KeyGroupWriter {
    let redis: RedisOptions
    /// The group's file, named in messages about its contents (`keygroup set`).
    let file: String?

    /// What `--check-files` loads: inline keys too, since the point is to test this group.
    static let fileCheck = KeyLoadOptions(allowInlineKeys: true, kms: AWSKMSKeys())

    func store(_ write: (KeyGroupStore) throws(KeyGroupStoreError) -> KeyGroupStore.Stored) throws {
        let ns = try redis.ns
        let connection = try redis.connect()
        let stored: KeyGroupStore.Stored
        do { stored = try write(KeyGroupStore(connection: connection, namespace: ns)) } catch {
            throw Terminal.fail(nil, message(error, ns))
        }
        let document = stored.document
        Terminal.result("stored key group version \(document.version) (active \(document.active), keys \(document.keys.map(\.id).joined(separator: ", ")))")
        Terminal.info("announced on \(ns.keyGroupChanged) to \(stored.subscribers) subscriber(s); workers also poll the key. Watch them converge: cfsign status --watch")
        if document.keys.contains(where: { if case .inlinePEM = $0.source { return true } else { return false } }) {
            Terminal.info("note: this group has inline private_key_pem; workers refuse it unless started with --allow-inline-keys")
        }
    }

    func message(_ error: KeyGroupStoreError, _ ns: Namespace) -> String {
        switch error {
        case .redis(.watching, let error): return "WATCH: \(error.message)"
        case .redisRefused(.watching, let e): return "WATCH: Redis said \(e)"
        case .redis(.readingFleet, let error): return "reading the fleet: \(error.message)"
        case .redisRefused(.readingFleet, let e): return "reading the fleet: \(e)"
        case .redis(.storing, let error): return "storing the key group: \(error.message)"
        case .redisRefused(.storing, let e): return "storing the key group: \(e)"
        case .noVersionAbove(let highest):
            return "the stored group or a live worker reports version \(highest), and no version is higher; delete \(ns.keyGroup) and stop the workers that report it. Nothing was written."
        case .versionNotAbove(let version, let highest, let next):
            return "version \(version) is not higher than \(highest) (the stored group or a live worker's); use \(next) or leave \"version\" out. Nothing was written."
        case .keysRefused(let error): return "key group refused: \(error.reason). Nothing was written."
        case .notJSON(let error): return "\(file ?? "key group"): \(error)"
        case .invalidDocument(let error): return "\(file ?? "key group"): key group refused: \(error.reason). Nothing was written."
        case .invalidRotation(let error): return "the rotated group is not valid: \(error.reason)"
        case .keptChanging: return "the key group kept changing while this command ran; nothing was written, try again"
        }
    }
}

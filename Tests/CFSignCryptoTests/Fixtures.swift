import Foundation
import CFSignSync
import Testing
import CFSignCore
import CFSignCrypto
import CFSignTestSupport

/// Key files made once per test run with the `openssl` command line, in a fresh temporary folder.
///
/// RSA-4096 generation takes a second or more, so everything is generated once, lazily, and shared.
struct Fixtures: Sendable {
    let root: String

    func path(_ name: String) -> String { root + "/" + name }

    func contents(_ name: String) throws -> [UInt8] {
        Array(try Data(contentsOf: URL(fileURLWithPath: path(name))))
    }

    func text(_ name: String) throws -> String { String(decoding: try contents(name), as: UTF8.self) }

    /// The policy whose openssl signatures `rsa2048.sha1.sig` / `rsa2048.sha256.sig` are known answers.
    static let policy = Policy(kind: .canned, resource: "https://d111111abcdef8.cloudfront.net/invoices/42.pdf", expiresAt: 1_767_225_600)

    static let shared: Result<Fixtures, FixtureError> = Result { try Fixtures.make() }.mapError { FixtureError(message: "\($0)") }

    static func get() throws -> Fixtures { try shared.get() }

    static func make() throws -> Fixtures {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("cfsign-crypto-tests-\(getpid())-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        fixtureRoot.withLock { $0 = root }
        atexit {
            if let root = fixtureRoot.withLock({ $0 }) { try? FileManager.default.removeItem(atPath: root) }
        }
        let f = Fixtures(root: root)
        // The slow one runs while the rest are made.
        let slow = try start(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096", "-out", f.path("rsa4096.pem")])
        let steps: [[String]] = [
            ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", f.path("rsa2048.p8.pem")],
            ["rsa", "-in", f.path("rsa2048.p8.pem"), "-traditional", "-out", f.path("rsa2048.p1.pem")],
            ["pkey", "-in", f.path("rsa2048.p8.pem"), "-pubout", "-out", f.path("rsa2048.pub.pem")],
            ["rsa", "-in", f.path("rsa2048.p8.pem"), "-RSAPublicKey_out", "-out", f.path("rsa2048.rsapub.pem")],
            ["req", "-x509", "-key", f.path("rsa2048.p8.pem"), "-subj", "/CN=cfsign test", "-days", "1", "-out", f.path("certificate.pem")],
            ["rsa", "-in", f.path("rsa2048.p8.pem"), "-traditional", "-aes256", "-passout", "pass:x", "-out", f.path("encrypted.p1.pem")],
            ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", f.path("rsa2048-other.pem")],
            ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f.path("ec.sec1.pem")],
            ["ecparam", "-name", "prime256v1", "-genkey", "-out", f.path("ec.params.pem")],
            ["pkcs8", "-topk8", "-nocrypt", "-in", f.path("ec.sec1.pem"), "-out", f.path("ec.p8.pem")],
            ["pkey", "-in", f.path("ec.sec1.pem"), "-pubout", "-out", f.path("ec.pub.pem")],
            ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024", "-out", f.path("rsa1024.pem")],
            ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:secp384r1", "-out", f.path("secp384r1.pem")],
            ["genpkey", "-algorithm", "ed25519", "-out", f.path("ed25519.pem")],
            ["pkey", "-in", f.path("ed25519.pem"), "-pubout", "-out", f.path("ed25519.pub.pem")],
            ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-aes256", "-pass", "pass:x", "-out", f.path("encrypted.p8.pem")],
        ]
        for step in steps { try wait(start(step), step) }
        // Known answers: what openssl itself signs for the policy bytes.
        _ = FileManager.default.createFile(atPath: f.path("policy.json"), contents: Data(policy.bytes))
        for digest in ["sha1", "sha256"] {
            try wait(start(["dgst", "-\(digest)", "-sign", f.path("rsa2048.p8.pem"), "-out", f.path("rsa2048.\(digest).sig"), f.path("policy.json")]), [digest])
        }
        _ = FileManager.default.createFile(atPath: f.path("garbage.pem"), contents: Data("this is not a key\n".utf8))
        _ = FileManager.default.createFile(atPath: f.path("empty.pem"), contents: Data())
        // A PEM frame around bytes that are not a key.
        _ = FileManager.default.createFile(atPath: f.path("corrupt.pem"), contents: Data("-----BEGIN PRIVATE KEY-----\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n-----END PRIVATE KEY-----\n".utf8))
        try FileManager.default.createDirectory(atPath: f.path("directory.pem"), withIntermediateDirectories: false)
        try wait(slow, ["genpkey 4096"])
        // Private key files are 0600, as a mounted secret should be; copies with looser modes for the mode checks.
        for name in try FileManager.default.contentsOfDirectory(atPath: root) where name.hasSuffix(".pem") && name != "directory.pem" {
            try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: f.path(name))
        }
        for (name, mode) in [("ec.mode0640.pem", 0o640), ("ec.mode0604.pem", 0o604), ("ec.mode0660.pem", 0o660)] {
            try FileManager.default.copyItem(atPath: f.path("ec.sec1.pem"), toPath: f.path(name))
            try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: f.path(name))
        }
        return f
    }

    private static func start(_ arguments: [String]) throws -> ChildProcess {
        try ChildProcess("/usr/bin/openssl", arguments)
    }

    private static func wait(_ p: ChildProcess, _ what: [String]) throws {
        let status = p.wait()
        guard status == 0 else {
            throw FixtureError(message: "openssl \(what.joined(separator: " ")) exited with \(status)")
        }
    }
}

struct FixtureError: Error, Sendable, CustomStringConvertible {
    let message: String
    var description: String { message }
}

let fixtureRoot = Locked<String?>(nil)

/// Runs `body` and returns the KeyError it threw, or nil.
func keyError(_ body: () throws -> Void) -> KeyError? {
    do { try body(); return nil } catch let error as KeyError { return error } catch { return nil }
}

func keyGroupError(_ body: () throws -> Void) -> KeyGroupError? {
    do { try body(); return nil } catch let error as KeyGroupError { return error } catch { return nil }
}

/// The query parameters of a signed URL, in order.
func queryItems(_ url: String) -> [(name: String, value: String)] {
    guard let q = url.firstIndex(of: "?") else { return [] }
    return url[url.index(after: q)...].split(separator: "&").map { item in
        let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
        return (String(parts[0]), parts.count > 1 ? String(parts[1]) : "")
    }
}

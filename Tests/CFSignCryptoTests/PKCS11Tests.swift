import Foundation
import Synchronization
import Testing
import CFSignCore
@testable import CFSignCrypto
import CFSignTestSupport

/// Real SoftHSM2 tokens (Debian's `softhsm2`).
///
/// PKCS#11 is initialised once per process and SoftHSM reads its token folder at C_Initialize, so
/// a token made later is not seen by this process: every token the Swift tests use is made, and its
/// keys imported, once, before the first test loads a key. (The pytest system tests make a token per
/// test, each for its own worker process.) Tests run serialized, and a key a test loads is released
/// at its end, so one test's login does not outlive it.
struct SoftHSM: Sendable {
    static let module = "/usr/lib/softhsm/libsofthsm2.so"
    static var available: Bool {
        FileManager.default.fileExists(atPath: module) && FileManager.default.isExecutableFile(atPath: "/usr/bin/softhsm2-util")
    }

    let root: String
    /// Token "keys" (PIN 1234): KRSA (id 01, rsa2048.p8.pem), KEC (02, ec.sec1.pem), K1024 (03), K384 (04).
    let label = "keys"
    /// Token "pins" (PIN 1234) with KEC only: the wrong-PIN tests use it so "keys" is never locked.
    let pinsLabel = "pins"
    var pinFile: String { root + "/pin" }

    static let shared: Result<SoftHSM, FixtureError> = Result { try SoftHSM.make() }.mapError { FixtureError(message: "\($0)") }
    static func get() throws -> SoftHSM { try shared.get() }

    static func make() throws -> SoftHSM {
        let f = try Fixtures.get()
        // Inside the fixtures' folder, which is removed at exit: no token store is left in /tmp.
        let root = f.path("softhsm")
        try FileManager.default.createDirectory(atPath: root + "/tokens", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try "directories.tokendir = \(root)/tokens\nobjectstore.backend = file\nlog.level = ERROR\n".write(toFile: root + "/softhsm2.conf", atomically: true, encoding: .utf8)
        setenv("SOFTHSM2_CONF", root + "/softhsm2.conf", 1)
        let hsm = SoftHSM(root: root)
        FileManager.default.createFile(atPath: hsm.pinFile, contents: Data("1234\n".utf8), attributes: [.posixPermissions: 0o600])
        for label in [hsm.label, hsm.pinsLabel] {
            try run(["--init-token", "--free", "--label", label, "--pin", "1234", "--so-pin", "5678"])
        }
        try importKey(f.path("rsa2048.p8.pem"), root: root, token: hsm.label, object: "KRSA", id: "01")
        try importKey(f.path("ec.sec1.pem"), root: root, token: hsm.label, object: "KEC", id: "02")
        try importKey(f.path("rsa1024.pem"), root: root, token: hsm.label, object: "K1024", id: "03")
        try importKey(f.path("secp384r1.pem"), root: root, token: hsm.label, object: "K384", id: "04")
        try importKey(f.path("ec.sec1.pem"), root: root, token: hsm.pinsLabel, object: "KEC", id: "02")
        return hsm
    }

    /// A file holding `text` with `mode`, in the token folder's parent.
    func file(_ name: String, _ text: String, mode: Int = 0o600) -> String {
        let path = root + "/" + name
        try? FileManager.default.removeItem(atPath: path)
        FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: mode])
        return path
    }

    /// Imports a PEM private key (any format openssl reads) as a key pair with `object` label and id.
    static func importKey(_ pem: String, root: String, token: String, object: String, id: String) throws {
        let p8 = root + "/\(token)-\(object).p8"
        try openssl(["pkcs8", "-topk8", "-nocrypt", "-in", pem, "-out", p8])
        try run(["--import", p8, "--token", token, "--label", object, "--id", id, "--pin", "1234"])
        try? FileManager.default.removeItem(atPath: p8)
    }

    static func openssl(_ arguments: [String]) throws {
        try run(arguments, tool: "/usr/bin/openssl")
    }

    static func run(_ arguments: [String], tool: String = "/usr/bin/softhsm2-util") throws {
        try runTool(tool, arguments)
    }

    func uri(_ object: String, token: String? = nil, pinFile: String? = nil) -> String {
        SoftHSM.uri(token: token ?? label, object: object, pinFile: pinFile ?? self.pinFile)
    }

    static func uri(token: String, object: String, pinFile: String, extra: String = "") -> String {
        "pkcs11:token=\(token);object=\(object)\(extra)?module-path=\(module)&pin-source=file:\(pinFile)"
    }
}

@Suite("PKCS#11 keys in SoftHSM", .enabled(if: SoftHSM.available, "softhsm2 is not installed (scripts/setup installs it)"), .serialized)
struct PKCS11Tests {
    func source(_ text: String) throws -> KeyGroupDocument.KeySource { .pkcs11(try PKCS11URI(parsing: text)) }

    func load(_ text: String, options: KeyLoadOptions = KeyLoadOptions()) throws -> any SigningKey {
        try SigningKeyGroup.loadKey(try source(text), id: "K", options: options)
    }

    func loadError(_ text: String, options: KeyLoadOptions = KeyLoadOptions()) throws -> String {
        do { _ = try load(text, options: options); return "" } catch let error as KeyError { return error.description }
    }

    @Test("an RSA key in the token signs byte-identically to the same key as a file, SHA-1 and SHA-256")
    func rsaIdenticalToFile() throws {
        let f = try Fixtures.get()
        let hsm = try load(SoftHSM.get().uri("KRSA"))
        let file = try PrivateKey.load(file: f.path("rsa2048.p8.pem"))
        #expect(hsm.type == .rsa2048)
        #expect(hsm.publicKey.matches(file.publicKey))
        for hash in HashAlgorithm.allCases {
            let policy = Fixtures.policy.bytes
            #expect(try hsm.sign(policy, hash: hash) == file.sign(policy, hash: hash), "\(hash)")
            #expect(try hsm.sign(policy, hash: hash) == f.contents("rsa2048.\(hash.rawValue.lowercased()).sig"), "\(hash) known answer")
        }
    }

    @Test("an EC P-256 signature from the token is DER and verifies under the public key, SHA-1 and SHA-256")
    func ecVerifies() throws {
        let f = try Fixtures.get()
        let hsm = try load(SoftHSM.get().uri("KEC"))
        let publicKey = try PublicKey.load(file: f.path("ec.pub.pem"))
        #expect(hsm.type == .ecP256)
        #expect(hsm.publicKey.matches(publicKey))
        for hash in HashAlgorithm.allCases {
            for _ in 0..<20 {  // r or s with a high bit set needs a 0x00 in DER: cover both
                let sig = try hsm.sign(Fixtures.policy.bytes, hash: hash)
                #expect(sig.first == 0x30)
                #expect(publicKey.verify(signature: sig, message: Fixtures.policy.bytes, hash: hash), "\(hash)")
            }
        }
    }

    @Test("a group mixes a file key and an HSM key, and public_key_pem is checked against the token")
    func mixedGroup() throws {
        let f = try Fixtures.get()
        let hsm = try SoftHSM.get()
        let doc = try KeyGroupDocument(version: 1, active: "KEC", keys: [
            .init(id: "KEC", source: source(hsm.uri("KEC")), publicKeyPEM: f.text("ec.pub.pem")),
            .init(id: "KRSA", source: .file(f.path("rsa2048.p1.pem"))),
        ])
        let group = try SigningKeyGroup.load(doc, options: KeyLoadOptions())
        #expect(try group.key(for: nil).key.location != .memory)
        #expect(try group.key(for: "KRSA").key.location == .memory)

        let wrong = try KeyGroupDocument(version: 2, active: "KEC", keys: [
            .init(id: "KEC", source: source(hsm.uri("KEC")), publicKeyPEM: f.text("rsa2048.pub.pem")),
        ])
        let e = keyGroupError { _ = try SigningKeyGroup.load(wrong, options: KeyLoadOptions()) }
        #expect(e?.reason.contains("does not match its public_key_pem") == true, "\(String(describing: e))")
    }

    @Test("a module that cannot be loaded is refused naming module-path")
    func badModule() throws {
        let hsm = try SoftHSM.get()
        let text = "pkcs11:token=keys;object=K?module-path=/nonexistent/libnope.so&pin-source=file:\(hsm.pinFile)"
        #expect(try loadError(text).contains("module-path /nonexistent/libnope.so"))
        let notModule = "pkcs11:token=keys;object=K?module-path=/etc/hostname&pin-source=file:\(hsm.pinFile)"
        #expect(try loadError(notModule).contains("module-path /etc/hostname"))
    }

    @Test("a module-path outside pkcs11_modules is refused before the module is loaded")
    func moduleNotAllowed() throws {
        var options = KeyLoadOptions()
        options.pkcs11Modules = ["/usr/lib/x86_64-linux-gnu/libnot-this-one.so"]
        let e = try loadError(SoftHSM.get().uri("KEC"), options: options)
        #expect(e.contains("module-path \(SoftHSM.module)"), "\(e)")
        #expect(e.contains("is not a module this process may load"), "\(e)")
        options.pkcs11Modules = []
        #expect(try loadError(SoftHSM.get().uri("KEC"), options: options).contains("pkcs11_modules: none"))
    }

    @Test("a module-path in pkcs11_modules loads, also when either side is spelled through a symlink")
    func moduleAllowedThroughSymlink() throws {
        let hsm = try SoftHSM.get()
        let link = hsm.root + "/module-link-\(UUID().uuidString).so"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: SoftHSM.module)
        defer { try? FileManager.default.removeItem(atPath: link) }
        var options = KeyLoadOptions()
        options.pkcs11Modules = [link]
        #expect(try load(hsm.uri("KEC"), options: options).type == .ecP256)
        options.pkcs11Modules = [SoftHSM.module]
        let viaLink = hsm.uri("KEC").replacingOccurrences(of: "module-path=\(SoftHSM.module)", with: "module-path=\(link)")
        #expect(viaLink.contains(link))
        #expect(try load(viaLink, options: options).type == .ecP256)
    }

    @Test("a wrong PIN is refused naming pin-source, never the PIN")
    func wrongPIN() throws {
        let hsm = try SoftHSM.get()
        let bad = hsm.file("badpin", "987654\n")
        let message = try loadError(hsm.uri("KEC", token: hsm.pinsLabel, pinFile: bad))
        #expect(message.contains("pin-source \(bad)"), "\(message)")
        #expect(message.contains("CKR_PIN_INCORRECT"), "\(message)")
        #expect(!message.contains("987654"))
    }

    @Test("a second group with a different PIN for a logged-in token is refused, not taken as logged in")
    func differentPINWhileLoggedIn() throws {
        let hsm = try SoftHSM.get()
        let live = try load(hsm.uri("KEC", token: hsm.pinsLabel))
        let bad = hsm.file("otherpin", "000000")
        let message = try loadError(hsm.uri("KEC", token: hsm.pinsLabel, pinFile: bad))
        #expect(message.contains("different PIN"), "\(message)")
        #expect(message.contains("pin-source \(bad)"), "\(message)")
        // The same PIN again is fine, and the live key still signs.
        _ = try load(hsm.uri("KEC", token: hsm.pinsLabel))
        _ = try live.sign([1, 2, 3], hash: .sha256)
    }

    @Test("a missing object, a missing token and a group-readable PIN file are refused naming the URI part")
    func missingObjectAndToken() throws {
        let hsm = try SoftHSM.get()
        #expect(try loadError(hsm.uri("NOPE")).contains("object=NOPE"))
        #expect(try loadError(hsm.uri("KEC", token: "no-such-token")).contains("token=no-such-token"))
        let loose = hsm.file("loosepin", "1234", mode: 0o644)
        #expect(try loadError(hsm.uri("KEC", pinFile: loose)).contains("pin-source \(loose)"))
    }

    @Test("pin-value is refused without the inline opt-in and accepted with it")
    func pinValueOptIn() throws {
        let text = "pkcs11:token=keys;object=KEC?module-path=\(SoftHSM.module)&pin-value=1234"
        let message = try loadError(text)
        #expect(message.contains("pin-value"))
        #expect(!message.contains("1234"))
        _ = try load(text, options: KeyLoadOptions(allowInlineKeys: true))
    }

    @Test("RSA-1024 and secp384r1 keys in the token are refused naming the object")
    func wrongKeyTypes() throws {
        let hsm = try SoftHSM.get()
        let rsa = try loadError(hsm.uri("K1024"))
        #expect(rsa.contains("object=K1024") && rsa.contains("RSA-1024"), "\(rsa)")
        let ec = try loadError(hsm.uri("K384"))
        #expect(ec.contains("object=K384") && ec.contains("P-256"), "\(ec)")
    }

    @Test("more signing threads than the token allows sessions all sign")
    func fewerSessionsThanThreads() throws {
        let f = try Fixtures.get()
        let key = try load(SoftHSM.get().uri("KEC"), options: KeyLoadOptions(pkcs11MaxSessions: 2))
        let publicKey = try PublicKey.load(file: f.path("ec.pub.pem"))
        let good = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 16) { i in
            for _ in 0..<10 {
                let message = Array("message \(i)".utf8)
                if let sig = try? key.sign(message, hash: .sha256), publicKey.verify(signature: sig, message: message, hash: .sha256) {
                    good.add(1, ordering: .relaxed)
                }
            }
        }
        #expect(good.load(ordering: .relaxed) == 160)
    }

    @Test("after the token drops every session (and so the login), signing says key_unavailable, then logs in again and signs")
    func recoversAfterLogout() throws {
        let key = try load(SoftHSM.get().uri("KRSA"))
        let hsmKey = try #require(key as? PKCS11Key)
        _ = try key.sign([1], hash: .sha256)
        hsmKey.token.closeAllSessions()
        var codes: [ErrorCode] = []
        var signed = false
        for _ in 0..<5 {
            do {
                _ = try key.sign([2], hash: .sha256)
                signed = true
                break
            } catch {
                codes.append(error.code)
            }
        }
        #expect(signed, "never signed again: \(codes)")
        #expect(!codes.isEmpty && codes.allSatisfy { $0 == .keyUnavailable }, "\(codes)")
    }
}

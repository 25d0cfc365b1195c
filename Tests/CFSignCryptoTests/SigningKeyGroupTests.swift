import Testing
import CFSignCore
import CFSignCrypto

@Suite("SigningKeyGroup")
struct SigningKeyGroupTests {
    func document(active: String = "KRSA", _ keys: [KeyGroupDocument.Key]) throws -> KeyGroupDocument {
        try KeyGroupDocument(version: 4, active: active, keys: keys)
    }

    func fileKey(_ id: String, _ file: String, publicFile: String? = nil) throws -> KeyGroupDocument.Key {
        let f = try Fixtures.get()
        return .init(id: id, source: .file(f.path(file)), publicKeyPEM: try publicFile.map { try f.text($0) })
    }

    /// A valid RSA active key next to `other`, so a refusal shows the whole group goes, not just one key.
    func refusal(_ other: KeyGroupDocument.Key, options: KeyLoadOptions = KeyLoadOptions()) throws -> KeyGroupError? {
        let doc = try document([try fileKey("KRSA", "rsa2048.p1.pem"), other])
        return keyGroupError { _ = try SigningKeyGroup.load(doc, options: options) }
    }

    @Test("a group loads every key, from files in each accepted format")
    func loadsAll() throws {
        let doc = try document([
            fileKey("KRSA", "rsa2048.p1.pem", publicFile: "rsa2048.pub.pem"),
            fileKey("KEC", "ec.p8.pem", publicFile: "ec.pub.pem"),
            fileKey("KEC2", "ec.params.pem"),
        ])
        let group = try SigningKeyGroup.load(doc, options: KeyLoadOptions())
        #expect(group.version == 4)
        #expect(group.activeID == "KRSA")
        #expect(group.keyIDs == ["KRSA", "KEC", "KEC2"])
        #expect(group.document == doc)
        #expect(try group.key(for: "KEC2").key.type == .ecP256)
    }

    @Test("key(for: nil) is the active key")
    func activeByDefault() throws {
        let group = try SigningKeyGroup.load(document(active: "KEC", [fileKey("KRSA", "rsa2048.p1.pem"), fileKey("KEC", "ec.sec1.pem")]), options: KeyLoadOptions())
        let chosen = try group.key(for: nil)
        #expect(chosen.id == "KEC")
        #expect(chosen.key.type == .ecP256)
    }

    @Test("key(for:) returns a named key that is not the active one")
    func namedKey() throws {
        let group = try SigningKeyGroup.load(document(active: "KEC", [fileKey("KRSA", "rsa2048.p1.pem"), fileKey("KEC", "ec.sec1.pem")]), options: KeyLoadOptions())
        let chosen = try group.key(for: "KRSA")
        #expect(chosen.id == "KRSA")
        #expect(chosen.key.type == .rsa2048)
    }

    @Test("key(for:) an id outside the group is unknown_key naming the group's keys")
    func unknownKey() throws {
        let group = try SigningKeyGroup.load(document([fileKey("KRSA", "rsa2048.p1.pem"), fileKey("KEC", "ec.sec1.pem")]), options: KeyLoadOptions())
        do {
            _ = try group.key(for: "KNOPE")
            Issue.record("no error")
        } catch {
            #expect(error.code == .unknownKey)
            #expect(error.message.contains("\"KNOPE\""))
            #expect(error.message.contains("version 4"))
            #expect(error.message.contains("KRSA, KEC"))
        }
    }

    @Test("a missing key file refuses the whole group, naming the key")
    func missingFile() throws {
        let e = try #require(try refusal(fileKey("KGONE", "missing.pem")))
        #expect(e.reason.hasPrefix("key \"KGONE\": "))
        #expect(e.reason.contains("missing.pem"))
        #expect(e.reason.contains("cannot read"))
    }

    @Test("a key of the wrong type or size refuses the whole group, naming the key", arguments: [
        ("rsa1024.pem", "RSA-1024"), ("rsa4096.pem", "RSA-4096"), ("secp384r1.pem", "secp384r1"), ("ed25519.pem", "ED25519"),
        ("rsa2048.pub.pem", "public key"), ("encrypted.p8.pem", "encrypted"), ("garbage.pem", "not a PEM key"),
    ])
    func wrongType(file: String, reason: String) throws {
        let e = try #require(try refusal(fileKey("KBAD", file)))
        #expect(e.reason.hasPrefix("key \"KBAD\": "))
        #expect(e.reason.contains(reason))
    }

    @Test("a key file readable or writable by group or others refuses the group", arguments: [
        ("ec.mode0640.pem", "0640"), ("ec.mode0604.pem", "0604"), ("ec.mode0660.pem", "0660"),
    ])
    func looseMode(file: String, mode: String) throws {
        let e = try #require(try refusal(fileKey("KLOOSE", file)))
        #expect(e.reason.hasPrefix("key \"KLOOSE\": "))
        #expect(e.reason.contains("has mode \(mode)"))
        #expect(e.reason.contains("chmod 600"))
    }

    @Test("allowGroupReadableKeyFiles accepts a key file with mode 0640")
    func looseModeAllowed() throws {
        #expect(try refusal(fileKey("KLOOSE", "ec.mode0640.pem"), options: KeyLoadOptions(allowGroupReadableKeyFiles: true)) == nil)
    }

    @Test("inline PEM is refused unless allowInlineKeys")
    func inlineRefused() throws {
        let pem = try Fixtures.get().text("ec.sec1.pem")
        let e = try #require(try refusal(.init(id: "KINLINE", source: .inlinePEM(pem))))
        #expect(e.reason.hasPrefix("key \"KINLINE\": "))
        #expect(e.reason.contains("private_key_pem inline"))
        #expect(!e.reason.contains("BEGIN"))
    }

    @Test("inline PEM loads with allowInlineKeys")
    func inlineAllowed() throws {
        let f = try Fixtures.get()
        let doc = try document(active: "KINLINE", [
            .init(id: "KINLINE", source: .inlinePEM(try f.text("ec.sec1.pem")), publicKeyPEM: try f.text("ec.pub.pem")),
        ])
        let group = try SigningKeyGroup.load(doc, options: KeyLoadOptions(allowInlineKeys: true))
        #expect(try group.key(for: nil).key.type == .ecP256)
        // An unusable inline key is still refused, named by its id.
        let bad = try document(active: "KINLINE", [.init(id: "KINLINE", source: .inlinePEM(try f.text("rsa1024.pem")))])
        let e = try #require(keyGroupError { _ = try SigningKeyGroup.load(bad, options: KeyLoadOptions(allowInlineKeys: true)) })
        #expect(e.reason.contains("inline key \"KINLINE\": is an RSA-1024 key"))
    }

    @Test("a public_key_pem that is not the private key's pair refuses the group", arguments: [
        ("ec.sec1.pem", "rsa2048.pub.pem"), ("rsa2048-other.pem", "rsa2048.pub.pem"), ("ec.params.pem", "ec.pub.pem"),
    ])
    func publicKeyMismatch(file: String, publicFile: String) throws {
        let e = try #require(try refusal(fileKey("KPAIR", file, publicFile: publicFile)))
        #expect(e.reason.hasPrefix("key \"KPAIR\": "))
        #expect(e.reason.contains("does not match its public_key_pem"))
    }

    @Test("a public_key_pem that is not a public key refuses the group")
    func publicKeyGarbage() throws {
        let e = try #require(try refusal(.init(id: "KPAIR", source: .file(Fixtures.get().path("ec.sec1.pem")), publicKeyPEM: "nonsense")))
        #expect(e.reason.hasPrefix("key \"KPAIR\": public_key_pem of key \"KPAIR\""))
    }
}

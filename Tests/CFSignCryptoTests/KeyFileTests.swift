import Foundation
import Testing
import CFSignSync
import CFSignCore
import CFSignCrypto

@Suite("Key files")
struct KeyFileTests {
    @Test("accepted private key formats load with the right key type", arguments: [
        ("rsa2048.p1.pem", KeyType.rsa2048),    // PKCS#1 (BEGIN RSA PRIVATE KEY)
        ("rsa2048.p8.pem", .rsa2048),           // PKCS#8 (BEGIN PRIVATE KEY)
        ("rsa2048-other.pem", .rsa2048),
        ("ec.sec1.pem", .ecP256),               // SEC1 (BEGIN EC PRIVATE KEY)
        ("ec.params.pem", .ecP256),             // SEC1 after an EC PARAMETERS block
        ("ec.p8.pem", .ecP256),                 // PKCS#8
    ])
    func accepted(file: String, type: KeyType) throws {
        let f = try Fixtures.get()
        #expect(try PrivateKey.load(file: f.path(file)).type == type)
    }

    @Test("the fixtures are in the formats their names say")
    func fixtureFormats() throws {
        let f = try Fixtures.get()
        #expect(try f.text("rsa2048.p1.pem").hasPrefix("-----BEGIN RSA PRIVATE KEY-----"))
        #expect(try f.text("rsa2048.p8.pem").hasPrefix("-----BEGIN PRIVATE KEY-----"))
        #expect(try f.text("ec.sec1.pem").hasPrefix("-----BEGIN EC PRIVATE KEY-----"))
        #expect(try f.text("ec.params.pem").hasPrefix("-----BEGIN EC PARAMETERS-----"))
        #expect(try f.text("ec.p8.pem").hasPrefix("-----BEGIN PRIVATE KEY-----"))
        #expect(try f.text("encrypted.p8.pem").hasPrefix("-----BEGIN ENCRYPTED PRIVATE KEY-----"))
        #expect(try f.text("encrypted.p1.pem").contains("Proc-Type: 4,ENCRYPTED"))
    }

    @Test("a key file that cannot be used throws KeyError naming the file and the reason", arguments: [
        ("rsa1024.pem", "is an RSA-1024 key; CloudFront accepts RSA-2048 and EC P-256 keys only"),
        ("rsa4096.pem", "is an RSA-4096 key"),
        ("secp384r1.pem", "is an EC key on curve secp384r1"),
        ("ed25519.pem", "ED25519 key; CloudFront accepts RSA-2048 and EC P-256 keys only"),
        ("encrypted.p8.pem", "is an encrypted private key"),
        ("encrypted.p1.pem", "is an encrypted private key"),
        ("rsa2048.pub.pem", "is a public key"),
        ("rsa2048.rsapub.pem", "is a public key"),
        ("certificate.pem", "is a certificate"),
        ("garbage.pem", "is not a PEM key"),
        ("empty.pem", "is not a PEM key"),
        ("corrupt.pem", "is not a readable private key"),
        ("missing.pem", "cannot read the private key file (No such file or directory)"),
        ("directory.pem", "is not a regular file"),
    ])
    func refused(file: String, reason: String) throws {
        let f = try Fixtures.get()
        let path = f.path(file)
        let error = try #require(keyError { _ = try PrivateKey.load(file: path) })
        #expect(error.source == path)
        #expect(error.reason.contains(reason))
        #expect(error.description == "\(path): \(error.reason)")
    }

    @Test("an encrypted key throws at once instead of prompting for a password", arguments: ["encrypted.p8.pem", "encrypted.p1.pem"])
    func encryptedDoesNotBlock(file: String) throws {
        let path = try Fixtures.get().path(file)
        let done = DispatchSemaphore(value: 0)
        let outcome = Locked<KeyError?>(nil)
        Thread {
            outcome.withLock { $0 = keyError { _ = try PrivateKey.load(file: path) } }
            done.signal()
        }.start()
        guard done.wait(timeout: .now() + 20) == .success else {
            Issue.record("loading \(file) did not return within 20 s (is it prompting for a password?)")
            return
        }
        #expect(outcome.withLock { $0 }?.reason.contains("encrypted") == true)
    }

    @Test("PEM text given inline is named by its source in errors, never by its content")
    func inlineSource() throws {
        let pem = try Fixtures.get().contents("rsa1024.pem")
        let error = try #require(keyError { _ = try PrivateKey(pem: pem, source: "inline key \"K1\"") })
        #expect(error.description.hasPrefix("inline key \"K1\": is an RSA-1024 key"))
        #expect(!error.description.contains("PRIVATE KEY"))
        #expect(try PrivateKey(pem: Fixtures.get().contents("ec.p8.pem"), source: "x").type == .ecP256)
    }

    @Test("public keys load with their type")
    func publicKeys() throws {
        let f = try Fixtures.get()
        #expect(try PublicKey.load(file: f.path("rsa2048.pub.pem")).type == .rsa2048)
        #expect(try PublicKey.load(file: f.path("ec.pub.pem")).type == .ecP256)
    }

    @Test("a public key that cannot be used throws KeyError naming the source and the reason", arguments: [
        ("rsa2048.p8.pem", "is a private key"),
        ("ec.sec1.pem", "is a private key"),
        ("rsa2048.rsapub.pem", "is not a PEM public key"),
        ("garbage.pem", "is not a PEM public key"),
        ("ed25519.pub.pem", "ED25519 key"),
        ("missing.pem", "cannot read the public key file"),
    ])
    func publicRefused(file: String, reason: String) throws {
        let path = try Fixtures.get().path(file)
        let error = try #require(keyError { _ = try PublicKey.load(file: path) })
        #expect(error.source == path)
        #expect(error.reason.contains(reason))
    }
}

import Foundation
import Testing
import CFSignSync
import CFSignCore
import CFSignCrypto

@Suite("Signatures")
struct SigningTests {
    let message = Fixtures.policy.bytes

    @Test("RSA signatures are deterministic, 256 bytes, and verify", arguments: HashAlgorithm.allCases)
    func rsaDeterministic(hash: HashAlgorithm) throws {
        let f = try Fixtures.get()
        let key = try PrivateKey.load(file: f.path("rsa2048.p1.pem"))
        let publicKey = try PublicKey.load(file: f.path("rsa2048.pub.pem"))
        let a = try key.sign(message, hash: hash)
        let b = try PrivateKey.load(file: f.path("rsa2048.p8.pem")).sign(message, hash: hash)
        #expect(a.count == 256)
        #expect(a == b)
        #expect(publicKey.verify(signature: a, message: message, hash: hash))
    }

    @Test("RSA signatures are byte for byte what `openssl dgst -sign` makes", arguments: HashAlgorithm.allCases)
    func rsaKnownAnswer(hash: HashAlgorithm) throws {
        let f = try Fixtures.get()
        let key = try PrivateKey.load(file: f.path("rsa2048.p8.pem"))
        let expected = try f.contents("rsa2048.\(hash == .sha1 ? "sha1" : "sha256").sig")
        #expect(try key.sign(message, hash: hash) == expected)
    }

    @Test("EC signatures are DER and verify", arguments: HashAlgorithm.allCases)
    func ecVerifies(hash: HashAlgorithm) throws {
        let f = try Fixtures.get()
        let key = try PrivateKey.load(file: f.path("ec.params.pem"))
        let publicKey = try PublicKey(pem: Array(key.publicKeyPEM.utf8), source: "test")
        let signature = try key.sign(message, hash: hash)
        #expect(signature.first == 0x30)
        #expect(signature.count <= 72)
        #expect(publicKey.verify(signature: signature, message: message, hash: hash))
        let sec1 = try PrivateKey.load(file: f.path("ec.sec1.pem"))
        #expect(try PublicKey.load(file: f.path("ec.pub.pem")).verify(signature: sec1.sign(message, hash: hash), message: message, hash: hash))
    }

    @Test("a tampered message, a tampered signature, another digest or another key fail verification", arguments: ["rsa2048.p8.pem", "ec.p8.pem"])
    func tampered(file: String) throws {
        let f = try Fixtures.get()
        let key = try PrivateKey.load(file: f.path(file))
        let publicKey = try PublicKey(pem: Array(key.publicKeyPEM.utf8), source: "test")
        let signature = try key.sign(message, hash: .sha256)
        var otherMessage = message
        otherMessage[otherMessage.count / 2] ^= 1
        var otherSignature = signature
        otherSignature[otherSignature.count - 1] ^= 1
        #expect(!publicKey.verify(signature: signature, message: otherMessage, hash: .sha256))
        #expect(!publicKey.verify(signature: otherSignature, message: message, hash: .sha256))
        #expect(!publicKey.verify(signature: signature, message: message, hash: .sha1))
        #expect(!publicKey.verify(signature: [], message: message, hash: .sha256))
        let stranger = try PrivateKey.generate(key.type)
        #expect(!publicKey.verify(signature: try stranger.sign(message, hash: .sha256), message: message, hash: .sha256))
    }

    @Test("matches is true for the key pair and false for another key")
    func matches() throws {
        let f = try Fixtures.get()
        let rsa = try PrivateKey.load(file: f.path("rsa2048.p1.pem"))
        let ec = try PrivateKey.load(file: f.path("ec.sec1.pem"))
        let rsaPublic = try PublicKey.load(file: f.path("rsa2048.pub.pem"))
        let ecPublic = try PublicKey.load(file: f.path("ec.pub.pem"))
        #expect(rsa.matches(rsaPublic))
        #expect(ec.matches(ecPublic))
        #expect(try PrivateKey.load(file: f.path("ec.p8.pem")).matches(ecPublic))
        #expect(!rsa.matches(ecPublic))
        #expect(!ec.matches(rsaPublic))
        #expect(try !PrivateKey.load(file: f.path("rsa2048-other.pem")).matches(rsaPublic))
        #expect(try !PrivateKey.load(file: f.path("ec.params.pem")).matches(ecPublic))
    }

    @Test("publicKeyPEM is the SPKI PEM openssl writes, and round-trips through PublicKey(pem:)", arguments: [
        ("rsa2048.p1.pem", "rsa2048.pub.pem"), ("ec.sec1.pem", "ec.pub.pem"),
    ])
    func publicKeyPEM(privateFile: String, publicFile: String) throws {
        let f = try Fixtures.get()
        let key = try PrivateKey.load(file: f.path(privateFile))
        #expect(key.publicKeyPEM == (try f.text(publicFile)))
        let publicKey = try PublicKey(pem: Array(key.publicKeyPEM.utf8), source: "round trip")
        #expect(publicKey.type == key.type)
        #expect(key.matches(publicKey))
    }

    @Test("PrivateKey.generate makes a key of each type that signs and verifies", arguments: KeyType.allCases)
    func generate(type: KeyType) throws {
        let key = try PrivateKey.generate(type)
        #expect(key.type == type)
        let publicKey = try PublicKey(pem: Array(key.publicKeyPEM.utf8), source: "generated")
        #expect(publicKey.type == type)
        #expect(publicKey.verify(signature: try key.sign(message, hash: .sha256), message: message, hash: .sha256))
        let reread = try PrivateKey(pem: key.privateKeyPEM(), source: "generated")
        #expect(reread.type == type)
        #expect(reread.matches(publicKey))
        #expect(String(decoding: key.privateKeyPEM(), as: UTF8.self).hasPrefix("-----BEGIN PRIVATE KEY-----"))
        #expect(!key.matches(try PublicKey(pem: Array(PrivateKey.generate(type).publicKeyPEM.utf8), source: "other")))
    }

    @Test("DigestSupport.signable contains SHA256")
    func digestSupport() {
        #expect(DigestSupport.signable.contains(.sha256))
        #expect(DigestSupport.openSSLVersion.hasPrefix("OpenSSL"))
    }

    @Test("8 threads signing with one shared RSA key give the signatures one thread gives")
    func concurrentSigning() throws {
        let key = try PrivateKey.load(file: Fixtures.get().path("rsa2048.p8.pem"))
        let messages = (0..<12).map { Array("message \($0)".utf8) }
        let expected = try messages.map { try key.sign($0, hash: .sha1) }
        let results = Locked<[Int: [[UInt8]]]>([:])
        let done = DispatchGroup()
        for thread in 0..<8 {
            done.enter()
            Thread {
                var mine: [[UInt8]] = []
                for m in messages { mine.append((try? key.sign(m, hash: .sha1)) ?? []) }
                results.withLock { $0[thread] = mine }
                done.leave()
            }.start()
        }
        #expect(done.wait(timeout: .now() + 60) == .success)
        let all = results.withLock { $0 }
        #expect(all.count == 8)
        for (thread, signatures) in all { #expect(signatures == expected, "thread \(thread)") }
    }
}

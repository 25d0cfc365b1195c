internal import CCFSignPKCS11
internal import CCFSignOpenSSL
import CFSignCore
import Synchronization

/// A private key held in an HSM token: signs through the PKCS#11 module, never enters memory.
///
/// RSA-2048 signs with CKM_SHA1_RSA_PKCS / CKM_SHA256_RSA_PKCS over the policy (byte-identical to
/// OpenSSL's PKCS#1 v1.5); P-256 signs with CKM_ECDSA over the digest OpenSSL computes here, and the
/// raw r‖s the token returns is encoded as the DER CloudFront expects.
final class PKCS11Key: SigningKey, @unchecked Sendable {
    // Immutable after init; signing borrows a session from the token's pool per call.
    let token: PKCS11Token
    /// The private key object's handle; found again (and its public key compared) when the token
    /// forgets it, e.g. after it was removed and came back.
    private let handle: Atomic<UInt>
    var object: CK_OBJECT_HANDLE { CK_OBJECT_HANDLE(handle.load(ordering: .relaxed)) }
    let uri: PKCS11URI
    let type: KeyType
    let publicKey: PublicKey
    let location: KeyLocation
    let signableHashes: Set<HashAlgorithm>

    init(token: PKCS11Token, object: CK_OBJECT_HANDLE, type: KeyType, publicKey: PublicKey, uri: PKCS11URI, hashes: Set<HashAlgorithm>) {
        self.token = token
        self.handle = Atomic(UInt(object))
        self.uri = uri
        self.type = type
        self.publicKey = publicKey
        self.location = .pkcs11(uri: uri.description)
        self.signableHashes = hashes
    }

    func sign(_ message: [UInt8], hash: HashAlgorithm) throws(SigningError) -> [UInt8] {
        let mechanism: CK_MECHANISM_TYPE
        var input: [UInt8]
        switch type {
        case .rsa2048:
            mechanism = CK_MECHANISM_TYPE(hash == .sha1 ? CKM_SHA1_RSA_PKCS : CKM_SHA256_RSA_PKCS)
            input = message
        case .ecP256:
            mechanism = CK_MECHANISM_TYPE(CKM_ECDSA)
            guard let d = Self.digest(message, hash) else {
                throw SigningError(.unsupportedHash, "this OpenSSL build has no \(hash.rawValue) digest")
            }
            input = d
        }
        let raw: [UInt8]
        do throws(PKCS11Error) {
            let object = self.object
            raw = try token.withSession { s throws(PKCS11Error) in
                try Self.sign(token.module, s, object, mechanism, &input, size: type == .rsa2048 ? 256 : 64)
            }
        } catch {
            if error.rv == CKR_MECHANISM_INVALID {
                throw SigningError(.unsupportedHash, "the HSM token \"\(token.label)\" cannot sign with \(hash.rawValue) (\(error.description))")
            }
            if error.tokenUnavailable {
                // Recover for the next try (the worker retries key_unavailable jobs with backoff).
                if error.rv == CKR_USER_NOT_LOGGED_IN { token.relogin() }
                if error.rv == CKR_OBJECT_HANDLE_INVALID || error.rv == CKR_KEY_HANDLE_INVALID { refind() }
                throw SigningError(.keyUnavailable, "the HSM token \"\(token.label)\" did not sign (\(error.description))")
            }
            throw SigningError(.keyUnavailable, "the HSM token \"\(token.label)\" refused to sign (\(error.description))")
        }
        switch type {
        case .rsa2048: return raw
        case .ecP256:
            guard raw.count == 64 else {
                throw SigningError(.keyUnavailable, "the HSM token \"\(token.label)\" returned a \(raw.count)-byte ECDSA signature, not 64 bytes (r‖s)")
            }
            return DER.ecdsaSignature(r: Array(raw[0..<32]), s: Array(raw[32..<64]))
        }
    }

    /// Looks the key up again by its URI; takes the new handle only if it is the same key pair.
    /// A private key is only visible logged in, so an empty search logs in again and looks once more.
    private func refind() {
        let module = token.module
        func lookup() -> (handle: CK_OBJECT_HANDLE?, none: Bool) {
            let result = try? token.withSession { s throws(PKCS11Error) -> (CK_OBJECT_HANDLE?, Bool) in
                let current = try PKCS11.find(module, s, class: CK_OBJECT_CLASS(CKO_PRIVATE_KEY), label: uri.object, id: uri.id)
                guard current.count == 1 else { return (nil, current.isEmpty) }
                guard case .success(let again)? = try? Self.check(module, s, token: token, object: current[0], uri: uri, what: ""),
                      again.publicKey.matches(publicKey) else { return (nil, false) }
                return (current[0], false)
            }
            return result.map { (handle: $0.0, none: $0.1) } ?? (nil, false)
        }
        var found = lookup()
        if found.none {
            token.relogin()
            found = lookup()
        }
        if let h = found.handle { handle.store(UInt(h), ordering: .relaxed) }
    }

    private static func sign(_ module: PKCS11Module, _ session: PKCS11Session, _ key: CK_OBJECT_HANDLE,
                             _ type: CK_MECHANISM_TYPE, _ input: inout [UInt8], size: Int) throws(PKCS11Error) -> [UInt8] {
        let f = module.f.pointee
        var mechanism = CK_MECHANISM(mechanism: type, pParameter: nil, ulParameterLen: 0)
        let irv = f.C_SignInit!(session.handle, &mechanism, key)
        guard irv == CKR_OK else { throw PKCS11Error(rv: irv, call: "C_SignInit") }
        var signature = [UInt8](repeating: 0, count: size)
        var length = CK_ULONG(size)
        let count = CK_ULONG(input.count)
        let rv = f.C_Sign!(session.handle, &input, count, &signature, &length)
        guard rv == CKR_OK else { throw PKCS11Error(rv: rv, call: "C_Sign") }
        if Int(length) < signature.count { signature.removeSubrange(Int(length)...) }
        return signature
    }

    private static func digest(_ message: [UInt8], _ hash: HashAlgorithm) -> [UInt8]? {
        guard let d = Digest.for(hash) else { return nil }
        var out = [UInt8](repeating: 0, count: 64)
        var length: UInt32 = 0
        let ok = message.withUnsafeBufferPointer { m in EVP_Digest(m.baseAddress, m.count, &out, &length, d.md, nil) }
        guard ok == 1 else { OpenSSL.clearErrors(); return nil }
        return Array(out.prefix(Int(length)))
    }

    /// Finds and checks the key `uri` names, logging in to its token once for this group load.
    ///
    /// `pin` is the PIN already read from `pin-source` (or `pin-value`); `loggedIn` lists the tokens
    /// this group load has already logged in to, so a group with several keys on one token logs in once.
    static func load(_ uri: PKCS11URI, pin: [UInt8]?, pinSource: String, loggedIn: inout Set<ObjectIdentifier>, maxSessions: Int? = nil,
                     allowedModules: [String]? = nil) throws(KeyError) -> PKCS11Key {
        let module = try PKCS11Module.load(path: uri.modulePath, source: "module-path \(uri.modulePath)", allowed: allowedModules)
        let token = try module.loadLock.withLock { _ -> Result<PKCS11Token, KeyError> in
            Result { () throws(KeyError) -> PKCS11Token in
                let slots = try module.matchingSlots(uri)
                let wanted = tokenDescription(uri)
                guard let (slot, info) = slots.first else {
                    throw KeyError(source: wanted, reason: "no such token in module \(uri.modulePath)")
                }
                guard slots.count == 1 else {
                    throw KeyError(source: wanted, reason: "matches \(slots.count) tokens in module \(uri.modulePath); add token= or serial= to pick one")
                }
                let token = module.tokens.withLock { table -> PKCS11Token in
                    if let live = table[slot]?.token { return live }
                    let t = PKCS11Token(module: module, slot: slot, info: info, maxSessions: maxSessions)
                    table[slot] = WeakToken(token: t)
                    return t
                }
                if loggedIn.contains(ObjectIdentifier(token)) {
                    if let pin { try token.checkSamePIN(pin, pinSource: pinSource) }
                } else {
                    if let pin {
                        try token.login(pin: pin, pinSource: pinSource)
                    } else if info.flags & CK_FLAGS(CKF_LOGIN_REQUIRED) != 0 {
                        throw KeyError(source: wanted, reason: "requires a login; add pin-source=file:/path to the URI")
                    }
                    loggedIn.insert(ObjectIdentifier(token))
                }
                return token
            }
        }.get()
        let what = objectDescription(uri)
        let result: Result<PKCS11Key, KeyError>
        do throws(PKCS11Error) {
            result = try token.withSession { s throws(PKCS11Error) in
                let found = try PKCS11.find(module, s, class: CK_OBJECT_CLASS(CKO_PRIVATE_KEY), label: uri.object, id: uri.id)
                guard let object = found.first else {
                    return .failure(KeyError(source: what, reason: "no private key with these attributes in token \"\(token.label)\" (a private key is only found after login: check the PIN too)"))
                }
                guard found.count == 1 else {
                    return .failure(KeyError(source: what, reason: "matches more than one private key in token \"\(token.label)\"; add id= to pick one"))
                }
                return try check(module, s, token: token, object: object, uri: uri, what: what)
            }
        } catch {
            throw KeyError(source: tokenDescription(uri), reason: "cannot be searched (\(error.description))")
        }
        return try result.get()
    }

    static let p256OID: [UInt8] = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07]

    /// The key's type and public key, from the token: the private key object and its public pair.
    private static func check(_ module: PKCS11Module, _ s: PKCS11Session, token: PKCS11Token, object: CK_OBJECT_HANDLE,
                              uri: PKCS11URI, what: String) throws(PKCS11Error) -> Result<PKCS11Key, KeyError> {
        func attr(_ o: CK_OBJECT_HANDLE, _ t: UInt) -> [UInt8]? { PKCS11.attribute(module, s, o, CK_ATTRIBUTE_TYPE(t)) }
        if let sign = attr(object, UInt(CKA_SIGN)), sign.first == 0 {
            return .failure(KeyError(source: what, reason: "is a private key that may not sign (CKA_SIGN is false)"))
        }
        // Its public pair: same CKA_ID (how tokens pair keys), else the same label.
        let pairID = attr(object, UInt(CKA_ID)).flatMap { $0.isEmpty ? nil : $0 }
        let pairLabel = pairID == nil ? (attr(object, UInt(CKA_LABEL)).map { String(decoding: $0, as: UTF8.self) }) : nil
        let pair = try PKCS11.find(module, s, class: CK_OBJECT_CLASS(CKO_PUBLIC_KEY), label: pairLabel, id: pairID).first
        let keyType = PKCS11.ulong(attr(object, UInt(CKA_KEY_TYPE)))
        let spki: [UInt8]
        let type: KeyType
        var hashes = DigestSupport.signable
        switch keyType {
        case CK_KEY_TYPE(CKK_RSA)?:
            let source = pair ?? object
            guard let n = attr(source, UInt(CKA_MODULUS)) ?? attr(object, UInt(CKA_MODULUS)),
                  let e = attr(source, UInt(CKA_PUBLIC_EXPONENT)) ?? attr(object, UInt(CKA_PUBLIC_EXPONENT)) else {
                return .failure(KeyError(source: what, reason: "is an RSA key whose public key the token does not give (no CKA_MODULUS / CKA_PUBLIC_EXPONENT)"))
            }
            let bits = DER.unsigned(n).count * 8
            guard bits == 2048 else {
                return .failure(KeyError(source: what, reason: "is an RSA-\(bits) key; CloudFront accepts RSA-2048 and EC P-256 keys only"))
            }
            type = .rsa2048
            spki = DER.rsaSPKI(modulus: n, exponent: e)
            for (hash, mech) in [(HashAlgorithm.sha1, CKM_SHA1_RSA_PKCS), (.sha256, CKM_SHA256_RSA_PKCS)] {
                var info = CK_MECHANISM_INFO()
                if module.f.pointee.C_GetMechanismInfo!(token.slot, CK_MECHANISM_TYPE(mech), &info) != CKR_OK { hashes.remove(hash) }
            }
        case CK_KEY_TYPE(CKK_EC)?:
            let params = attr(object, UInt(CKA_EC_PARAMS)) ?? pair.flatMap { attr($0, UInt(CKA_EC_PARAMS)) }
            guard params == p256OID else {
                return .failure(KeyError(source: what, reason: "is an EC key on a curve other than P-256; CloudFront accepts EC keys on P-256 (prime256v1) only"))
            }
            guard let pair, let point = attr(pair, UInt(CKA_EC_POINT)).flatMap(DER.ecPoint) else {
                return .failure(KeyError(source: what, reason: "is an EC key with no public key object beside it (same id or label) holding CKA_EC_POINT; import the key pair, not the private key alone"))
            }
            type = .ecP256
            spki = DER.ecSPKI(point: point)
        case let other?:
            let name = other == CK_KEY_TYPE(CKK_DSA) ? "DSA" : other == CK_KEY_TYPE(CKK_EC_EDWARDS) ? "EdDSA" : "CKK 0x\(String(other, radix: 16))"
            return .failure(KeyError(source: what, reason: "is a \(name) key; CloudFront accepts RSA-2048 and EC P-256 keys only"))
        case nil:
            return .failure(KeyError(source: what, reason: "has no readable CKA_KEY_TYPE"))
        }
        let publicKey: PublicKey
        do throws(KeyError) {
            publicKey = try PublicKey(der: spki, source: what)
        } catch {
            return .failure(error)
        }
        return .success(PKCS11Key(token: token, object: object, type: type, publicKey: publicKey, uri: uri, hashes: hashes))
    }

    static func tokenDescription(_ uri: PKCS11URI) -> String {
        var parts: [String] = []
        if let t = uri.token { parts.append("token=\(t)") }
        if let s = uri.serial { parts.append("serial=\(s)") }
        if let m = uri.manufacturer { parts.append("manufacturer=\(m)") }
        if let m = uri.model { parts.append("model=\(m)") }
        if let s = uri.slotID { parts.append("slot-id=\(s)") }
        return parts.isEmpty ? "the URI's token (no token= given)" : parts.joined(separator: ";")
    }

    static func objectDescription(_ uri: PKCS11URI) -> String {
        var parts: [String] = []
        if let o = uri.object { parts.append("object=\(o)") }
        if let id = uri.id { parts.append("id=" + id.map { b in (b < 16 ? "%0" : "%") + String(b, radix: 16) }.joined()) }
        return parts.joined(separator: ";")
    }
}

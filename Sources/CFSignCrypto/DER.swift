/// The few DER structures cfsign builds itself: the public key a PKCS#11 token reports as raw
/// numbers, turned into an SPKI OpenSSL can read, and ECDSA signatures from raw r‖s.
enum DER {
    static func length(_ n: Int) -> [UInt8] {
        if n < 0x80 { return [UInt8(n)] }
        var bytes: [UInt8] = []
        var v = n
        while v > 0 { bytes.insert(UInt8(v & 0xFF), at: 0); v >>= 8 }
        return [0x80 | UInt8(bytes.count)] + bytes
    }

    static func tlv(_ tag: UInt8, _ content: [UInt8]) -> [UInt8] { [tag] + length(content.count) + content }

    /// A big-endian unsigned number without its leading zero bytes.
    static func unsigned(_ bytes: [UInt8]) -> [UInt8] {
        let trimmed = Array(bytes.drop { $0 == 0 })
        return trimmed.isEmpty ? [0] : trimmed
    }

    /// A non-negative INTEGER: minimal, with a 0x00 in front when the top bit is set.
    static func integer(_ bytes: [UInt8]) -> [UInt8] {
        var v = unsigned(bytes)
        if v[0] & 0x80 != 0 { v.insert(0, at: 0) }
        return tlv(0x02, v)
    }

    static func sequence(_ parts: [UInt8]...) -> [UInt8] { tlv(0x30, parts.flatMap { $0 }) }

    static func rsaSPKI(modulus: [UInt8], exponent: [UInt8]) -> [UInt8] {
        let algorithm = sequence([0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01], [0x05, 0x00])
        let key = sequence(integer(modulus), integer(exponent))
        return sequence(algorithm, tlv(0x03, [0] + key))
    }

    static func ecSPKI(point: [UInt8]) -> [UInt8] {
        let algorithm = sequence([0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01], PKCS11Key.p256OID)
        return sequence(algorithm, tlv(0x03, [0] + point))
    }

    /// CKA_EC_POINT is a DER OCTET STRING holding the uncompressed point (some old modules give the
    /// bare point): the 65-byte 04‖X‖Y either way, or nil.
    static func ecPoint(_ value: [UInt8]) -> [UInt8]? {
        if value.count == 67, value[0] == 0x04, value[1] == 65, value[2] == 0x04 { return Array(value[2...]) }
        if value.count == 65, value[0] == 0x04 { return value }
        return nil
    }

    /// ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }, as OpenSSL's EVP signs.
    static func ecdsaSignature(r: [UInt8], s: [UInt8]) -> [UInt8] { sequence(integer(r), integer(s)) }
}

/// A PKCS#11 URI (RFC 7512) naming a private key in an HSM token: parsed and checked here, at the
/// edge, so the loader in CFSignCrypto only deals with attributes that are known to be well formed.
///
/// Path attributes (`;`-separated): `token`, `manufacturer`, `serial`, `model` pick the token,
/// `object` (CKA_LABEL) and `id` (CKA_ID, any bytes) pick the key, `type` may only be `private`,
/// `slot-id` picks a slot. Query attributes (`&`-separated): `module-path` (required: cfsign dlopens
/// it), `pin-source=file:/path` or `pin-value=` (the second one only with the inline-keys opt-in,
/// which the loader checks). Vendor attributes (`x-...`) are ignored, as RFC 7512 allows; any other
/// attribute is refused, because a misspelt `objet=` silently ignored would pick the wrong key.
///
/// Errors name the attribute at fault and never echo a PIN: `description` prints the URI with
/// `pin-value` masked.
public struct PKCS11URI: Sendable, Equatable, CustomStringConvertible {
    public enum PIN: Sendable, Equatable {
        /// `pin-source=file:/path`: the worker reads the PIN from this file (checked like a key file).
        case file(String)
        /// `pin-value=...`: the PIN in the URI itself (development only).
        case value(String)
    }

    /// The URI exactly as given (it may hold a `pin-value`; never print it: use `description`).
    public let text: String
    public let token: String?
    public let manufacturer: String?
    public let serial: String?
    public let model: String?
    public let slotID: UInt64?
    public let object: String?
    public let id: [UInt8]?
    public let modulePath: String
    public let pin: PIN?

    /// The URI with any `pin-value` replaced by `***`: safe for logs, errors and `keygroup show`.
    public var description: String {
        guard case .value = pin, let q = text.firstIndex(of: "?") else { return text }
        let query = text[text.index(after: q)...].split(separator: "&", omittingEmptySubsequences: false).map { part in
            part.hasPrefix("pin-value=") ? "pin-value=***" : String(part)
        }
        return String(text[...q]) + query.joined(separator: "&")
    }

    /// Parses `text`. Each refusal names the attribute at fault.
    public init(parsing text: String) throws(KeyGroupError) {
        self.text = text
        guard text.hasPrefix("pkcs11:") else { throw KeyGroupError("is not a pkcs11: URI") }
        let body = text.dropFirst("pkcs11:".count)
        let pathPart: Substring
        let queryPart: Substring?
        if let q = body.firstIndex(of: "?") {
            pathPart = body[..<q]
            queryPart = body[body.index(after: q)...]
        } else {
            pathPart = body
            queryPart = nil
        }
        var path: [String: [UInt8]] = [:]
        for attribute in pathPart.split(separator: ";", omittingEmptySubsequences: true) {
            let (name, value) = try Self.attribute(attribute, separator: ";")
            guard !name.hasPrefix("x-") else { continue }
            guard Self.pathAttributes.contains(name) else {
                throw KeyGroupError("has unknown path attribute \"\(name)\" (cfsign reads \(Self.pathAttributes.sorted().joined(separator: ", ")))")
            }
            guard path[name] == nil else { throw KeyGroupError("has path attribute \"\(name)\" more than once") }
            path[name] = value
        }
        var query: [String: [UInt8]] = [:]
        if let queryPart {
            for attribute in queryPart.split(separator: "&", omittingEmptySubsequences: true) {
                let (name, value) = try Self.attribute(attribute, separator: "&")
                guard !name.hasPrefix("x-") else { continue }
                guard Self.queryAttributes.contains(name) else {
                    throw KeyGroupError("has unknown query attribute \"\(name)\" (cfsign reads \(Self.queryAttributes.sorted().joined(separator: ", ")))")
                }
                guard query[name] == nil else { throw KeyGroupError("has query attribute \"\(name)\" more than once") }
                query[name] = value
            }
        }
        func string(_ name: String, _ table: [String: [UInt8]]) throws(KeyGroupError) -> String? {
            guard let bytes = table[name] else { return nil }
            guard let s = String(validating: bytes, as: UTF8.self) else {
                throw KeyGroupError("has attribute \"\(name)\" that is not UTF-8 once percent-decoded")
            }
            guard !s.isEmpty else { throw KeyGroupError("has an empty \"\(name)\"") }
            return s
        }
        token = try string("token", path)
        manufacturer = try string("manufacturer", path)
        serial = try string("serial", path)
        model = try string("model", path)
        object = try string("object", path)
        if let raw = path["id"] {
            guard !raw.isEmpty else { throw KeyGroupError("has an empty \"id\"") }
            id = raw
        } else {
            id = nil
        }
        if let type = try string("type", path), type != "private" {
            throw KeyGroupError("has type=\(type); cfsign signs with the private key (type=private, or leave type out)")
        }
        if let slot = try string("slot-id", path) {
            guard let n = UInt64(slot) else { throw KeyGroupError("has slot-id \"\(slot)\", which is not a decimal number") }
            slotID = n
        } else {
            slotID = nil
        }
        guard object != nil || id != nil else {
            throw KeyGroupError("names no key: give object= (the key's label) and/or id=")
        }
        guard let module = try string("module-path", query) else {
            if query["module-name"] != nil {
                throw KeyGroupError("has module-name, which cfsign does not resolve; give module-path= (the PKCS#11 library's absolute path)")
            }
            throw KeyGroupError("has no module-path= (the PKCS#11 library's absolute path, e.g. /usr/lib/softhsm/libsofthsm2.so)")
        }
        guard module.hasPrefix("/") else {
            throw KeyGroupError("has module-path \"\(module)\", which is not an absolute path")
        }
        modulePath = module
        let source = try string("pin-source", query)
        let value = query["pin-value"]
        switch (source, value) {
        case (_?, _?):
            throw KeyGroupError("has both pin-source and pin-value; give one")
        case (let source?, nil):
            let file: Substring
            if source.hasPrefix("file://") {
                file = source.dropFirst("file://".count)
            } else if source.hasPrefix("file:") {
                file = source.dropFirst("file:".count)
            } else {
                throw KeyGroupError("has pin-source \"\(source)\"; cfsign reads the PIN from a file only (pin-source=file:/path)")
            }
            guard file.hasPrefix("/") else {
                throw KeyGroupError("has pin-source \"\(source)\", which is not an absolute file path")
            }
            pin = .file(String(file))
        case (nil, let raw?):
            guard let s = String(validating: raw, as: UTF8.self), !s.isEmpty else {
                throw KeyGroupError("has an empty or non-UTF-8 pin-value")
            }
            pin = .value(s)
        case (nil, nil):
            pin = nil
        }
    }

    static let pathAttributes: Set<String> = ["token", "manufacturer", "serial", "model", "object", "id", "type", "slot-id"]
    static let queryAttributes: Set<String> = ["module-path", "module-name", "pin-source", "pin-value"]

    /// `name=value` with the value percent-decoded (RFC 3986); the name is kept as written.
    private static func attribute(_ part: Substring, separator: Character) throws(KeyGroupError) -> (String, [UInt8]) {
        guard let eq = part.firstIndex(of: "=") else {
            throw KeyGroupError("has attribute \"\(part.prefix(40))\" without \"=\"")
        }
        let name = String(part[..<eq])
        guard !name.isEmpty else { throw KeyGroupError("has an attribute with no name") }
        guard let out = PercentEncoding.decode(part[part.index(after: eq)...]) else {
            throw KeyGroupError("has attribute \"\(name)\" with a bad percent-encoding (%XX with two hex digits)")
        }
        return (name, out)
    }
}

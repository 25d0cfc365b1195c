/// The contract's stable error codes (PROTOCOL.md, "Reply"). Raw values are the wire spellings.
public enum ErrorCode: String, Sendable, CaseIterable, Hashable {
    case invalidJob = "invalid_job"
    case missingField = "missing_field"
    case invalidURL = "invalid_url"
    case invalidExpiry = "invalid_expiry"
    case ttlTooLong = "ttl_too_long"
    case invalidIP = "invalid_ip"
    case invalidResource = "invalid_resource"
    case unsupportedHash = "unsupported_hash"
    case policyDenied = "policy_denied"
    case unknownKey = "unknown_key"
    case noSigningKey = "no_signing_key"
    /// The HSM (or KMS) holding the key did not sign: not the job's fault (PROTOCOL.md, "Keys held
    /// outside the worker").
    case keyUnavailable = "key_unavailable"
    /// Dead entries only: the job was recovered from dead workers more than `max_recoveries` times.
    case poisonJob = "poison_job"
    case `internal` = "internal"
}

/// A job that can be answered but not signed: a code for programs and a message for people.
///
/// Messages say what is wrong and what is allowed. They never contain key material.
public struct SigningError: Error, Equatable, Sendable, CustomStringConvertible {
    public let code: ErrorCode
    public let message: String

    public init(_ code: ErrorCode, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}

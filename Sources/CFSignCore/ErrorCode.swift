/// The contract's stable error codes (PROTOCOL.md, "Reply"). Raw values are the wire spellings.
public struct ErrorCode: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    /// The code as the wire carries it (`invalid_job`, ...).
    public let rawValue: String

    /// Any code, known or not: a reply from a newer worker keeps the code it was given, so a
    /// producer never sees `internal` for a code it was not built with. Compare with the static
    /// members below, never switch exhaustively: the contract may add codes.
    public init(rawValue: String) { self.rawValue = rawValue }

    public var description: String { rawValue }

    /// True for the codes this build knows (`known`).
    public var isKnown: Bool { Self.known.contains(self) }

    public static let invalidJob = ErrorCode(rawValue: "invalid_job")
    public static let missingField = ErrorCode(rawValue: "missing_field")
    public static let invalidURL = ErrorCode(rawValue: "invalid_url")
    public static let invalidExpiry = ErrorCode(rawValue: "invalid_expiry")
    public static let ttlTooLong = ErrorCode(rawValue: "ttl_too_long")
    public static let invalidIP = ErrorCode(rawValue: "invalid_ip")
    public static let invalidResource = ErrorCode(rawValue: "invalid_resource")
    public static let unsupportedHash = ErrorCode(rawValue: "unsupported_hash")
    public static let policyDenied = ErrorCode(rawValue: "policy_denied")
    public static let unknownKey = ErrorCode(rawValue: "unknown_key")
    public static let noSigningKey = ErrorCode(rawValue: "no_signing_key")
    /// The HSM (or KMS) holding the key did not sign: not the job's fault (PROTOCOL.md, "Keys held
    /// outside the worker").
    public static let keyUnavailable = ErrorCode(rawValue: "key_unavailable")
    /// Dead entries only: the job was recovered from dead workers more than `max_recoveries` times.
    public static let poisonJob = ErrorCode(rawValue: "poison_job")
    public static let `internal` = ErrorCode(rawValue: "internal")

    /// Every code of the contract this build implements (metrics pre-register one series each).
    public static let known: [ErrorCode] = [
        .invalidJob, .missingField, .invalidURL, .invalidExpiry, .ttlTooLong, .invalidIP, .invalidResource,
        .unsupportedHash, .policyDenied, .unknownKey, .noSigningKey, .keyUnavailable, .poisonJob, .internal,
    ]
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

import Foundation

/// A failed KMS or STS call, classified for the worker: `retryable` failures (throttling, 5xx,
/// timeouts, connections) are waited out; the others need an operator (IAM, the key's state,
/// credentials) but still say exactly which AWS error it was. Never holds a credential.
public struct KMSError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// Throttled, a 5xx, a timeout or no connection: try again.
        case unavailable
        /// Missing, invalid or expired credentials (or a web identity STS refused).
        case credentials
        /// IAM or the key policy does not allow the call (AccessDeniedException).
        case denied
        /// No such key (NotFoundException).
        case notFound
        /// The key is disabled or pending deletion.
        case disabled
        /// Anything else KMS refused (a ValidationException, a key that may not sign).
        case invalid
    }

    public let kind: Kind
    /// The AWS error code (`ThrottlingException`, `AccessDeniedException`, ...), when AWS sent one.
    public let code: String?
    public let message: String

    public init(_ kind: Kind, code: String?, _ message: String) {
        self.kind = kind
        self.code = code
        self.message = message
    }

    public var retryable: Bool { kind == .unavailable }
    public var description: String { code.map { "\($0): \(message)" } ?? message }

    static let retryableCodes: Set<String> = [
        "ThrottlingException", "Throttling", "ThrottledException", "RequestLimitExceeded", "TooManyRequestsException",
        "KMSInternalException", "DependencyTimeoutException", "KeyUnavailableException", "InternalFailure",
        "InternalError", "ServiceUnavailable", "ServiceUnavailableException", "RequestTimeout", "RequestTimeoutException",
        "IDPCommunicationError",
    ]
    static let credentialCodes: Set<String> = [
        "UnrecognizedClientException", "InvalidClientTokenId", "ExpiredTokenException", "ExpiredToken",
        "InvalidSignatureException", "IncompleteSignature", "SignatureDoesNotMatch", "MissingAuthenticationToken",
        "MissingAuthenticationTokenException", "InvalidIdentityToken", "InvalidIdentityTokenException", "IDPRejectedClaim",
        "AuthFailure",
    ]

    /// Classifies an AWS error code and HTTP status.
    public static func kind(code: String?, status: Int) -> Kind {
        if let code {
            if retryableCodes.contains(code) { return .unavailable }
            if credentialCodes.contains(code) { return .credentials }
            switch code {
            case "AccessDeniedException", "AccessDenied": return .denied
            case "NotFoundException": return .notFound
            case "DisabledException", "KMSInvalidStateException": return .disabled
            default: break
            }
        }
        if status >= 500 || status == 429 { return .unavailable }
        if status == 401 || status == 403 { return code == nil ? .credentials : .denied }
        return .invalid
    }

    /// The error in a KMS (JSON: `__type`, `message`) or STS (XML: `<Code>`, `<Message>`) answer.
    public static func from(status: Int, body: [UInt8], errorTypeHeader: String? = nil, service: String) -> KMSError {
        var code: String? = nil
        var message: String? = nil
        if let object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] {
            if let type = object["__type"] as? String { code = String(type.split(separator: "#").last ?? Substring(type)) }
            message = (object["message"] as? String) ?? (object["Message"] as? String)
        } else {
            let text = String(decoding: body.prefix(16384), as: UTF8.self)
            code = XML.element("Code", in: text)
            message = XML.element("Message", in: text)
        }
        if code == nil, let header = errorTypeHeader, !header.isEmpty {
            code = String(header.split(separator: ":").first ?? Substring(header))
        }
        // Bounded here, at the edge: this text goes on into replies, the heartbeat, /readyz and logs.
        let awsCode = code.map { bounded($0, limit: codeLimit) }
        let kind = kind(code: awsCode, status: status)
        let text = message.map { "\(bounded($0, limit: messageLimit)) (HTTP \(status) from \(service))" } ?? "HTTP \(status) from \(service)"
        return KMSError(kind, code: awsCode, text)
    }

    /// The most bytes of an AWS error message (and of an error code) cfsign passes on.
    public static let messageLimit = 256
    public static let codeLimit = 64

    /// `text` as cfsign may show it: control characters (a forged newline in a log line, an escape
    /// sequence on a terminal) replaced by U+FFFD, and cut to `limit` UTF-8 bytes on a character
    /// boundary, with "…" where it was cut. An HTTP body is whatever the far end (or whoever sits
    /// on the path to it) chose to send.
    public static func bounded(_ text: String, limit: Int) -> String {
        var clean = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            switch scalar.properties.generalCategory {
            case .control, .lineSeparator, .paragraphSeparator, .format, .privateUse, .unassigned:
                clean.append("\u{FFFD}")
            default:
                clean.append(scalar)
            }
        }
        let whole = String(clean)
        guard whole.utf8.count > limit else { return whole }
        var out = String.UnicodeScalarView()
        var bytes = 0
        for scalar in clean {
            let size = UTF8.width(scalar)
            if bytes + size > limit - 3 { break }  // room for "…" (3 bytes)
            out.append(scalar)
            bytes += size
        }
        return String(out) + "…"
    }
}

/// Just enough XML for STS answers: the text of the first `<name>` element, entities decoded.
enum XML {
    static func element(_ name: String, in text: String) -> String? {
        guard let open = text.range(of: "<\(name)>"), let close = text.range(of: "</\(name)>", range: open.upperBound..<text.endIndex) else { return nil }
        return String(text[open.upperBound..<close.lowerBound])
            .replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&apos;", with: "'")
            .replacingOccurrences(of: "&amp;", with: "&")
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

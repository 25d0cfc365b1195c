/// `awskms:<key ARN or key id>`: a key that never leaves AWS KMS. Only the shape is checked here
/// (the loader asks KMS whether the key exists and may sign), so `cfsign keygroup set` and the
/// worker refuse a malformed one alike.
public struct KMSKeyURI: Sendable, Equatable, CustomStringConvertible {
    /// The URI as given.
    public let text: String
    /// What follows `awskms:`: an ARN (`arn:aws:kms:REGION:ACCOUNT:key/ID`), a key id, or an alias.
    public let keyID: String

    public var description: String { text }

    public init(parsing text: String) throws(KeyGroupError) {
        guard text.hasPrefix("awskms:") else { throw KeyGroupError("is not an awskms: URI") }
        let id = String(text.dropFirst("awskms:".count))
        guard !id.isEmpty else { throw KeyGroupError("names no key: give awskms:<key ARN or key id>") }
        guard id.utf8.count <= 2048, id.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw KeyGroupError("has a key id with spaces or characters outside printable ASCII")
        }
        if id.hasPrefix("arn:") {
            let parts = id.split(separator: ":", maxSplits: 5, omittingEmptySubsequences: false)
            guard parts.count == 6, parts[2] == "kms", !parts[3].isEmpty, parts[5].hasPrefix("key/") || parts[5].hasPrefix("alias/") else {
                throw KeyGroupError("has \"\(id)\", which is not a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)")
            }
            // The region becomes the host the worker sends its credentials to (kms.REGION.amazonaws.com,
            // and STS's for web identity): a key-group writer must not be able to name another host.
            guard Self.isRegion(parts[3]), Self.isPartition(parts[1]) else {
                throw KeyGroupError("has \"\(id)\", whose partition or region is not an AWS one (such as aws and us-east-1)")
            }
        }
        self.text = text
        self.keyID = id
    }

    /// `us-east-1`, `us-gov-west-1`, `cn-north-1`: lower-case words joined by `-`, ending in a number.
    static func isRegion(_ text: Substring) -> Bool {
        let words = text.split(separator: "-", omittingEmptySubsequences: false)
        guard words.count >= 3, let last = words.last, !last.isEmpty, last.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return false }
        return words.dropLast().allSatisfy { !$0.isEmpty && $0.utf8.allSatisfy { $0 >= 0x61 && $0 <= 0x7A } }
    }

    /// `aws`, `aws-cn`, `aws-us-gov`: `aws` and lower-case words.
    static func isPartition(_ text: Substring) -> Bool {
        let words = text.split(separator: "-", omittingEmptySubsequences: false)
        return words.first == "aws" && words.allSatisfy { !$0.isEmpty && $0.utf8.allSatisfy { $0 >= 0x61 && $0 <= 0x7A } }
    }
}

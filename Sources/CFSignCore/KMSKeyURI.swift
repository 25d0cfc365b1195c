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
        }
        self.text = text
        self.keyID = id
    }
}

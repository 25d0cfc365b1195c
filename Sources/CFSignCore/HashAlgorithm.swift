/// The digest a signature is made over. Raw values are the contract's exact spellings.
public enum HashAlgorithm: String, Sendable, CaseIterable, Hashable {
    case sha1 = "SHA1"
    case sha256 = "SHA256"

    /// The contract's spellings only (exact case), so producers cannot depend on a lenient worker.
    public init?(wireName: String) {
        self.init(rawValue: wireName)
    }
}

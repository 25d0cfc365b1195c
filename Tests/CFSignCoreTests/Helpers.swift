import CFSignCore

/// Shared helpers: jobs as the wire carries them, and what the parser made of them.

let ns = Namespace.default
let replyTo = "{cfsign}:reply:web-7"
let objectURL = "https://d111111abcdef8.cloudfront.net/invoices/42.pdf"

/// A job document with `id`, `reply_to`, `url` and `expires_in` unless overridden; `extra` is spliced in raw.
func job(url: String? = objectURL, expiry: String? = #""expires_in":3600"#, _ extra: String = "") -> String {
    var members = [#""id":"job-1""#, #""reply_to":"\#(replyTo)""#]
    if let url { members.append(#""url":"\#(url)""#) }
    if let expiry { members.append(expiry) }
    if !extra.isEmpty { members.append(extra) }
    return "{" + members.joined(separator: ",") + "}"
}

func intake(_ text: String) -> JobIntake { JobParser.parse(Array(text.utf8), namespace: ns) }

/// The error of a job that is answered with `ok:false`; nil if it was accepted or dead.
func refusal(_ text: String) -> SigningError? {
    if case .refused(_, _, let error) = intake(text) { return error }
    return nil
}

/// The error of a job that goes to `{NS}:dead`; nil otherwise.
func deadError(_ bytes: [UInt8]) -> SigningError? {
    if case .dead(let error) = JobParser.parse(bytes, namespace: ns) { return error }
    return nil
}

func deadError(_ text: String) -> SigningError? { deadError(Array(text.utf8)) }

/// The request of an accepted job; nil if it was refused or dead.
func accepted(_ text: String) -> SigningRequest? {
    if case .job(let j) = intake(text) { return j.request }
    return nil
}

extension SigningError {
    /// The message mentions every fragment (case-sensitive).
    func mentions(_ fragments: String...) -> Bool { fragments.allSatisfy { message.contains($0) } }
}

/// Runs `body` and returns the SigningError it threw, or nil.
func signingError(_ body: () throws -> Void) -> SigningError? {
    do { try body(); return nil } catch let error as SigningError { return error } catch { return nil }
}

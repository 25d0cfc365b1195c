import CFSignCore
import Testing

@Suite struct KMSKeyURITests {
    @Test func aKeyARNIsParsedAndRoundTripsThroughTheGroup() throws {
        let arn = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
        let text = #"{"version":1,"active":"A","keys":[{"id":"A","private_key_uri":"awskms:\#(arn)"}]}"#
        let doc = try KeyGroupDocument(json: Array(text.utf8))
        guard case .awsKMS(let uri) = doc.keys[0].source else { Issue.record("not an awskms source"); return }
        #expect(uri.keyID == arn)
        #expect(try KeyGroupDocument(json: doc.json) == doc)
    }

    @Test func keyIDsAndAliasesAreAccepted() throws {
        #expect(try KMSKeyURI(parsing: "awskms:1234abcd-12ab-34cd-56ef-1234567890ab").keyID == "1234abcd-12ab-34cd-56ef-1234567890ab")
        #expect(try KMSKeyURI(parsing: "awskms:alias/cfsign").keyID == "alias/cfsign")
    }

    @Test func malformedURIsAreRefusedWithTheReason() {
        func refusal(_ text: String) -> String? {
            do { _ = try KMSKeyURI(parsing: text); return nil } catch { return error.reason }
        }
        #expect(refusal("awskms:")?.contains("names no key") == true)
        #expect(refusal("awskms:arn:aws:s3:::bucket")?.contains("not a KMS key ARN") == true)
        #expect(refusal("awskms:a b")?.contains("spaces") == true)
    }
}

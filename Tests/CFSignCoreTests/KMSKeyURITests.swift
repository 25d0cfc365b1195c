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

    /// The region names the host the worker sends its credentials to: a key-group writer must not
    /// be able to point it at another host (attacker review of issue 16).
    @Test("an ARN whose region or partition could name another host is refused", arguments: [
        "arn:aws:kms:attacker.example/:111122223333:key/x",
        "arn:aws:kms:us-east-1.attacker.example:111122223333:key/x",
        "arn:aws:kms:us-east-1#:111122223333:key/x",
        "arn:aws:kms:US-EAST-1:111122223333:key/x",
        "arn:aws:kms:useast1:111122223333:key/x",
        "arn:evil:kms:us-east-1:111122223333:key/x",
    ])
    func hostileRegionRefused(arn: String) {
        do {
            _ = try KMSKeyURI(parsing: "awskms:" + arn)
            Issue.record("accepted \(arn)")
        } catch {
            #expect(error.reason.contains("not an AWS one"), "\(arn): \(error.reason)")
        }
    }

    @Test("every AWS partition's region form is accepted", arguments: [
        "arn:aws:kms:us-east-1:111122223333:key/x", "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/x",
        "arn:aws-cn:kms:cn-north-1:111122223333:key/x", "arn:aws:kms:ap-southeast-2:111122223333:alias/cfsign",
    ])
    func awsRegionsAccepted(arn: String) throws {
        #expect(try KMSKeyURI(parsing: "awskms:" + arn).keyID == arn)
    }
}

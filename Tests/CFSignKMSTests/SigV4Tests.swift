import CFSignKMS
import Testing

@Suite struct SigV4Tests {
    let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"

    @Test func amzDateIsUTCBasicFormat() {
        #expect(SigV4.amzDate(1_440_938_160) == "20150830T123600Z")
        #expect(SigV4.amzDate(0) == "19700101T000000Z")
    }

    /// AWS's published test suite, `get-vanilla`.
    @Test func getVanillaMatchesAWSTestSuite() {
        let request = SigV4.Request(method: "GET", headers: [("Host", "example.amazonaws.com"), ("X-Amz-Date", "20150830T123600Z")], body: [])
        let auth = SigV4(region: "us-east-1", service: "service").authorization(request, amzDate: "20150830T123600Z", accessKeyID: "AKIDEXAMPLE", secretAccessKey: secret)
        #expect(auth == "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
    }

    /// A KMS Sign request with a session token, signed by botocore's SigV4Auth at the same instant.
    @Test func kmsPostWithSessionTokenMatchesBotocore() {
        let body = Array(#"{"KeyId":"alias/cfsign","Message":"aGVsbG8=","MessageType":"RAW","SigningAlgorithm":"ECDSA_SHA_256"}"#.utf8)
        var request = SigV4.Request(method: "POST", headers: [
            ("Host", "127.0.0.1:5000"), ("Content-Type", "application/x-amz-json-1.1"), ("X-Amz-Target", "TrentService.Sign"),
        ], body: body)
        let creds = AWSCredentials(accessKeyID: "AKIDEXAMPLE", secretAccessKey: secret, sessionToken: "SESSIONTOKEN/x+y=")
        SigV4(region: "eu-west-1", service: "kms").sign(&request, credentials: creds, at: 1_796_171_405)
        let auth = request.headers.first { $0.0 == "Authorization" }?.1
        #expect(auth == "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261202/eu-west-1/kms/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, Signature=6abb7f3f8bb85d90efb54e1242f45c70cf33c2dbf68f5bbb3ec98b227776bc6c")
        #expect(request.headers.contains { $0.0 == "X-Amz-Security-Token" && $0.1 == "SESSIONTOKEN/x+y=" })
    }

    @Test func canonicalHeadersTrimAndCollapseSpaces() {
        let request = SigV4.Request(method: "POST", headers: [("X-B", "  a   b  "), ("x-a", "1")], body: [])
        let canonical = SigV4(region: "r", service: "s").canonicalRequest(request)
        #expect(canonical.contains("x-a:1\nx-b:a b\n\nx-a;x-b\n"))
    }
}

@Suite struct KMSFramingTests {
    @Test func policiesUpTo4096BytesAreSentRaw() {
        let message = [UInt8](repeating: 0x41, count: 4096)
        let framed = KMSClient.framing(message)
        #expect(framed.type == .raw)
        #expect(framed.bytes == message)
    }

    @Test func longerPoliciesAreSentAsTheirSHA256Digest() {
        let message = [UInt8](repeating: 0x41, count: 4097)
        let framed = KMSClient.framing(message)
        #expect(framed.type == .digest)
        #expect(framed.bytes == Digests.sha256(message))
        #expect(framed.bytes.count == 32)
    }
}

@Suite struct KMSErrorTests {
    @Test func throttlingIsRetryable() {
        let e = KMSError.from(status: 400, body: Array(#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.utf8), service: "KMS Sign")
        #expect(e.retryable)
        #expect(e.code == "ThrottlingException")
    }

    @Test func serverErrorsWithoutACodeAreRetryable() {
        #expect(KMSError.from(status: 503, body: Array("busy".utf8), service: "KMS Sign").retryable)
    }

    @Test func accessDeniedKeepsTheAWSCodeAndMessage() {
        let e = KMSError.from(status: 400, body: Array(#"{"__type":"com.amazonaws.kms#AccessDeniedException","message":"User is not authorized to perform: kms:Sign"}"#.utf8), service: "KMS Sign")
        #expect(e.kind == .denied)
        #expect(!e.retryable)
        #expect(e.description.hasPrefix("AccessDeniedException: User is not authorized"))
    }

    @Test func disabledAndNotFoundAreClassified() {
        #expect(KMSError.kind(code: "DisabledException", status: 400) == .disabled)
        #expect(KMSError.kind(code: "KMSInvalidStateException", status: 400) == .disabled)
        #expect(KMSError.kind(code: "NotFoundException", status: 400) == .notFound)
    }

    @Test func expiredAndInvalidCredentialsAreCredentialErrors() {
        #expect(KMSError.kind(code: "ExpiredTokenException", status: 400) == .credentials)
        #expect(KMSError.kind(code: "UnrecognizedClientException", status: 400) == .credentials)
    }

    @Test func stsXMLErrorsAreRead() {
        let xml = "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>bad &amp; old</Message></Error></ErrorResponse>"
        let e = KMSError.from(status: 400, body: Array(xml.utf8), service: "STS")
        #expect(e.code == "InvalidIdentityToken")
        #expect(e.kind == .credentials)
        #expect(e.message.hasPrefix("bad & old"))
    }
}

@Suite struct CredentialFileTests {
    @Test func credentialsFileSectionsAreProfileNames() {
        let file = ProfileFile(text: "[default]\naws_access_key_id = AKIA1\naws_secret_access_key=s1 # note\n\n[dev]\n# comment\naws_access_key_id=AKIA2\n", isConfig: false)
        #expect(file.sections["default"]?["aws_access_key_id"] == "AKIA1")
        #expect(file.sections["default"]?["aws_secret_access_key"] == "s1")
        #expect(file.sections["dev"]?["aws_access_key_id"] == "AKIA2")
    }

    @Test func configFileNamesProfilesWithThePrefix() {
        let file = ProfileFile(text: "[default]\nregion=us-east-1\n[profile dev]\nregion = eu-west-1\n[sso-session x]\nsso_region=us-west-2\n", isConfig: true)
        #expect(file.sections["default"]?["region"] == "us-east-1")
        #expect(file.sections["dev"]?["region"] == "eu-west-1")
        #expect(file.sections["sso-session x"] == nil)
    }

    @Test func environmentRegionAndEndpointOverrides() {
        let env = AWSEnvironment(["AWS_REGION": "eu-central-1", "AWS_ENDPOINT_URL": "http://127.0.0.1:1", "AWS_ENDPOINT_URL_KMS": "http://127.0.0.1:2", "HOME": "/nonexistent"])
        #expect(env.region == "eu-central-1")
        #expect(env.endpoint(service: "kms", region: "x") == "http://127.0.0.1:2")
        #expect(env.endpoint(service: "sts", region: "x") == "http://127.0.0.1:1")
        #expect(AWSEnvironment(["HOME": "/nonexistent"]).endpoint(service: "kms", region: "us-west-2") == "https://kms.us-west-2.amazonaws.com")
    }

    @Test func noCredentialsSaysWhereItLookedAndWhatIsUnsupported() {
        let env = AWSEnvironment(["HOME": "/nonexistent"])
        #expect(throws: KMSError.self) { try env.credentialProvider(region: "us-east-1", http: .shared, timeout: .seconds(1)) }
        do {
            _ = try env.credentialProvider(region: "us-east-1", http: .shared, timeout: .seconds(1))
        } catch {
            #expect(error.kind == .credentials)
            #expect(error.message.contains("instance metadata"))
        }
    }

    @Test func secretNeverAppearsInDescription() {
        let c = AWSCredentials(accessKeyID: "AKIA1", secretAccessKey: "topsecret", sessionToken: "tok")
        #expect(!c.description.contains("topsecret"))
        #expect(!c.description.contains("tok"))
    }
}

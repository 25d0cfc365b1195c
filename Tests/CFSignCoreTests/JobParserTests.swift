import Testing
import CFSignCore

@Suite("JobParser: accepted jobs")
struct JobParserAcceptedTests {
    @Test("the contract's example job is accepted with its id, reply_to and fields")
    func contractExample() throws {
        let text = #"""
        {
          "id": "inv-2026-11-0042",
          "reply_to": "{cfsign}:reply:web-7",
          "url": "https://d111111abcdef8.cloudfront.net/invoices/42.pdf",
          "expires_in": 2592000
        }
        """#
        guard case .job(let j) = intake(text) else { Issue.record("not accepted: \(intake(text))"); return }
        #expect(j.id == "inv-2026-11-0042")
        #expect(j.replyTo == "{cfsign}:reply:web-7")
        #expect(j.request.url == objectURL)
        #expect(j.request.expiry == .after(seconds: 2_592_000))
        #expect(j.request.output == .url)
        #expect(j.request.hash == nil)
        #expect(j.request.keyID == nil)
        #expect(j.request.isCanned)
    }

    @Test("every optional field is read")
    func allFields() throws {
        let extra = [
            #""starts_at":1767000000"#, #""ip":"192.0.2.0/24""#,
            #""resource":"https://d111111abcdef8.cloudfront.net/invoices/*""#,
            #""output":"cookies""#, #""hash":"SHA256""#, #""key_id":"K2JCJMDEHXQW5F""#,
        ].joined(separator: ",")
        let text = job(expiry: #""expires_at":1767225600"#, extra)
        let r = try #require(accepted(text))
        #expect(r.expiry == .at(1_767_225_600))
        #expect(r.startsAt == 1_767_000_000)
        #expect(r.ip == IPv4Range(address: 0xC000_0200, prefixLength: 24))
        #expect(r.resource == "https://d111111abcdef8.cloudfront.net/invoices/*")
        #expect(r.output == .cookies)
        #expect(r.hash == .sha256)
        #expect(r.keyID == "K2JCJMDEHXQW5F")
        #expect(!r.isCanned)
    }

    @Test("each of starts_at, ip and resource alone makes the policy custom", arguments: [
        #""starts_at":1"#, #""ip":"192.0.2.7""#, #""resource":"https://d111111abcdef8.cloudfront.net/*""#,
    ])
    func customTriggers(extra: String) throws {
        #expect(try #require(accepted(job(extra))).isCanned == false)
    }

    @Test("\"SHA1\" and \"url\" are accepted as spelled in the contract")
    func exactSpellings() throws {
        let r = try #require(accepted(job(#""hash":"SHA1","output":"url""#)))
        #expect(r.hash == .sha1)
        #expect(r.output == .url)
    }

    @Test("null for an optional field counts as absent")
    func nullIsAbsent() throws {
        let text = job(expiry: #""expires_at":null,"expires_in":60"#, #"""
            "starts_at":null,"ip":null,"resource":null,"output":null,"hash":null,"key_id":null
            """#)
        let r = try #require(accepted(text))
        #expect(r.expiry == .after(seconds: 60))
        #expect(r.isCanned)
        #expect(r.output == .url)
        #expect(r.hash == nil && r.keyID == nil)
    }

    @Test("unknown fields are ignored, whatever their type")
    func unknownFieldsIgnored() throws {
        let r = try #require(accepted(job(#""priority":"high","trace":{"a":[1,2.5,null]},"Expires":true,"URL":7"#)))
        #expect(r.url == objectURL)
    }

    @Test("a job of exactly 64 KiB is parsed")
    func exactlyMaximumSize() throws {
        let base = job(#""pad":"""#)
        let padding = JobParser.maximumSize - base.utf8.count
        let text = job(#""pad":"\#(String(repeating: "x", count: padding))""#)
        #expect(text.utf8.count == JobParser.maximumSize)
        #expect(accepted(text) != nil)
    }

    @Test("an id of exactly 200 bytes is accepted")
    func longestID() {
        let id = String(repeating: "é", count: 100)  // 200 bytes, 100 characters
        let text = #"{"id":"\#(id)","reply_to":"\#(replyTo)","url":"\#(objectURL)","expires_in":1}"#
        guard case .job(let j) = intake(text) else { Issue.record("refused"); return }
        #expect(j.id == id)
    }

    @Test("reply_to of another namespace's worker is judged against this worker's namespace")
    func otherNamespace() throws {
        let other = try Namespace("shop")
        let text = #"{"id":"a","reply_to":"{shop}:reply:x","url":"\#(objectURL)","expires_in":1}"#
        guard case .job = JobParser.parse(Array(text.utf8), namespace: other) else { Issue.record("refused"); return }
        #expect(deadError(text) != nil)
    }
}

@Suite("JobParser: dead jobs (no usable id or reply_to)")
struct JobParserDeadTests {
    @Test("bytes that are not JSON go to dead with invalid_job", arguments: [
        "", "hello", #"{"id":"a""#, #"{"id":"a",}"#, "{'id':'a'}",
    ])
    func notJSON(text: String) throws {
        let e = try #require(deadError(text))
        #expect(e.code == .invalidJob)
        #expect(e.mentions("not valid JSON"))
    }

    @Test("a JSON job with invalid UTF-8 in a string goes to dead with invalid_job")
    func invalidUTF8() throws {
        var bytes = Array(job().utf8)
        bytes.insert(0xFF, at: bytes.firstIndex(of: UInt8(ascii: "j"))!)
        let e = try #require(deadError(bytes))
        #expect(e.code == .invalidJob)
        #expect(e.mentions("UTF-8"))
    }

    @Test("JSON that is not an object goes to dead with invalid_job naming what it is", arguments: [
        ("[1,2]", "an array"), (#""job""#, "a string"), ("42", "an integer"), ("null", "null"), ("true", "a boolean"),
    ])
    func notAnObject(text: String, what: String) throws {
        let e = try #require(deadError(text))
        #expect(e.code == .invalidJob)
        #expect(e.mentions(what, "not a JSON object"))
    }

    @Test("a job over 64 KiB goes to dead with invalid_job, unparsed")
    func tooLarge() throws {
        let base = job(#""pad":"""#)
        let text = job(#""pad":"\#(String(repeating: "x", count: JobParser.maximumSize - base.utf8.count + 1))""#)
        #expect(text.utf8.count == JobParser.maximumSize + 1)
        let e = try #require(deadError(text))
        #expect(e.code == .invalidJob)
        #expect(e.mentions("\(JobParser.maximumSize + 1) bytes", "\(JobParser.maximumSize)"))
        // Not parsed: even garbage of that size gives the size message, not a JSON error.
        let garbage = try #require(deadError([UInt8](repeating: 0xFF, count: JobParser.maximumSize + 1)))
        #expect(garbage.mentions("bytes"))
    }

    @Test("a job without id goes to dead with missing_field")
    func noID() throws {
        let e = try #require(deadError(#"{"reply_to":"\#(replyTo)","url":"\#(objectURL)","expires_in":1}"#))
        #expect(e.code == .missingField)
        #expect(e.mentions("\"id\""))
    }

    @Test("a null id counts as absent: dead with missing_field")
    func nullID() throws {
        let e = try #require(deadError(#"{"id":null,"reply_to":"\#(replyTo)","url":"\#(objectURL)","expires_in":1}"#))
        #expect(e.code == .missingField)
    }

    @Test("an id that is not a string goes to dead with invalid_job", arguments: ["42", "true", "[]", "{}", "1.5"])
    func idWrongType(value: String) throws {
        let e = try #require(deadError(#"{"id":\#(value),"reply_to":"\#(replyTo)","url":"\#(objectURL)","expires_in":1}"#))
        #expect(e.code == .invalidJob)
        #expect(e.mentions("id must be a string"))
    }

    @Test("an empty id or one over 200 bytes goes to dead with invalid_job", arguments: [
        "", String(repeating: "a", count: 201), String(repeating: "é", count: 100) + "a",
    ])
    func idLength(id: String) throws {
        let e = try #require(deadError(#"{"id":"\#(id)","reply_to":"\#(replyTo)","url":"\#(objectURL)","expires_in":1}"#))
        #expect(e.code == .invalidJob)
        #expect(e.mentions("1-200 bytes", "it is \(id.utf8.count)"))
    }

    @Test("a job without reply_to goes to dead with missing_field")
    func noReplyTo() throws {
        let e = try #require(deadError(#"{"id":"a","url":"\#(objectURL)","expires_in":1}"#))
        #expect(e.code == .missingField)
        #expect(e.mentions("\"reply_to\""))
    }

    @Test("a reply_to that is not a string goes to dead with invalid_job")
    func replyToWrongType() throws {
        let e = try #require(deadError(#"{"id":"a","reply_to":["{cfsign}:reply:x"],"url":"\#(objectURL)","expires_in":1}"#))
        #expect(e.code == .invalidJob)
        #expect(e.mentions("reply_to must be a string"))
    }

    @Test("a reply_to outside {cfsign}:reply: goes to dead with invalid_job", arguments: [
        "{cfsign}:jobs", "{cfsign}:dead", "{other}:reply:x", "{cfsign}:reply:", "{cfsign}:reply", "cfsign:reply:x",
        "{CFSIGN}:reply:x", " {cfsign}:reply:x", "",
    ])
    func replyToOutsideNamespace(target: String) throws {
        let e = try #require(deadError(#"{"id":"a","reply_to":"\#(target)","url":"\#(objectURL)","expires_in":1}"#))
        #expect(e.code == .invalidJob)
        #expect(e.mentions("{cfsign}:reply:"))
    }

    @Test("a duplicated id or reply_to goes to dead with invalid_job", arguments: [
        #"{"id":"a","id":"b","reply_to":"{cfsign}:reply:x","url":"https://h/","expires_in":1}"#,
        #"{"id":"a","reply_to":"{cfsign}:reply:x","reply_to":"{cfsign}:jobs","url":"https://h/","expires_in":1}"#,
        // A duplicate of another field first must not hide the duplicated id.
        #"{"url":"https://h/","url":"https://g/","id":"a","id":"b","reply_to":"{cfsign}:reply:x","expires_in":1}"#,
        #"{"hash":"SHA1","hash":"SHA1","id":"a","reply_to":"{cfsign}:reply:x","reply_to":"{cfsign}:reply:y","expires_in":1}"#,
    ])
    func duplicateIdentity(text: String) throws {
        let e = try #require(deadError(text))
        #expect(e.code == .invalidJob)
        #expect(e.mentions("appears more than once"))
    }

    @Test("reply_to is compared byte for byte: a canonically equivalent spelling of the prefix is dead")
    func replyToBytes() throws {
        // U+212A KELVIN SIGN is canonically equivalent to "K", so String.hasPrefix would accept it,
        // but the Redis key it names is outside {Ks}:reply:.
        let kelvin = try Namespace("Ks")
        let text = #"{"id":"a","reply_to":"{\u212As}:reply:x","url":"\#(objectURL)","expires_in":1}"#
        guard case .dead(let e) = JobParser.parse(Array(text.utf8), namespace: kelvin) else {
            Issue.record("a reply_to outside {Ks}:reply: was accepted"); return
        }
        #expect(e.code == .invalidJob)
        // A combining mark right after the prefix still leaves the bytes inside it: answered.
        let combining = #"{"id":"a","reply_to":"{cfsign}:reply:\u0301x","url":"\#(objectURL)","expires_in":1}"#
        guard case .job(let j) = intake(combining) else { Issue.record("refused"); return }
        #expect(j.replyTo == "{cfsign}:reply:\u{301}x")
    }

    @Test("a job whose id is readable but reply_to is not is still dead, not answered")
    func idButNoReplyTo() {
        #expect(deadError(#"{"id":"a","reply_to":"{cfsign}:jobs"}"#) != nil)
    }
}

@Suite("JobParser: refused jobs (answered with ok:false)")
struct JobParserRefusedTests {
    @Test("a refused job keeps its id and reply_to for the answer")
    func refusedKeepsIdentity() {
        guard case .refused(let id, let r, let e) = intake(job(url: nil)) else { Issue.record("not refused"); return }
        #expect(id == "job-1")
        #expect(r == replyTo)
        #expect(e.code == .missingField)
    }

    @Test("a job without url is refused with missing_field")
    func noURL() throws {
        let e = try #require(refusal(job(url: nil)))
        #expect(e.code == .missingField)
        #expect(e.mentions("\"url\""))
        #expect(try #require(refusal(job(url: nil, #""url":null"#))).code == .missingField)
    }

    @Test("a field of the wrong type is refused with invalid_job naming the field", arguments: [
        (#""url":42"#, "url must be a string"),
        (#""expires_at":"1767225600""#, "expires_at must be an integer"),
        (#""expires_at":1767225600.0"#, "expires_at must be an integer"),
        (#""expires_at":1e10"#, "expires_at must be an integer"),
        (#""expires_in":"3600""#, "expires_in must be an integer"),
        (#""expires_in":true"#, "expires_in must be an integer"),
        (#""expires_in":1e300"#, "expires_in must be an integer"),
        (#""starts_at":[1]"#, "starts_at must be an integer"),
        (#""ip":3232235521"#, "ip must be a string"),
        (#""resource":{}"#, "resource must be a string"),
        (#""output":false"#, "output must be a string"),
        (#""hash":256"#, "hash must be a string"),
        (#""key_id":["K1"]"#, "key_id must be a string"),
    ])
    func wrongType(member: String, expected: String) throws {
        // The extra member comes after the defaults; a duplicate would mask the type, so drop the default.
        let name = String(member.dropFirst().prefix { $0 != "\"" })
        let text: String
        switch name {
        case "url": text = job(url: nil, member)
        case "expires_in", "expires_at": text = job(expiry: member)
        default: text = job(member)
        }
        let e = try #require(refusal(text))
        #expect(e.code == .invalidJob)
        #expect(e.mentions(expected))
    }

    @Test("a duplicated field other than id and reply_to is refused with invalid_job", arguments: [
        "url", "expires_in", "ip", "hash",
    ])
    func duplicateField(name: String) throws {
        let values = ["url": #""https://x.example/""#, "expires_in": "5", "ip": #""1.2.3.4""#, "hash": #""SHA1""#]
        let e = try #require(refusal(job(#""\#(name)":\#(values[name]!),"\#(name)":\#(values[name]!)"#)))
        #expect(e.code == .invalidJob)
        #expect(e.mentions("\"\(name)\" appears more than once"))
    }

    @Test("output other than \"url\" or \"cookies\" is refused with invalid_job", arguments: ["URL", "cookie", "Cookies", "", "json"])
    func badOutput(value: String) throws {
        let e = try #require(refusal(job(#""output":"\#(value)""#)))
        #expect(e.code == .invalidJob)
        #expect(e.mentions("output must be \"url\" or \"cookies\"", "\"\(value)\""))
    }

    @Test("both expires_at and expires_in are refused with invalid_expiry")
    func bothExpiries() throws {
        let e = try #require(refusal(job(expiry: #""expires_at":1767225600,"expires_in":60"#)))
        #expect(e.code == .invalidExpiry)
        #expect(e.mentions("both", "exactly one"))
    }

    @Test("neither expires_at nor expires_in is refused with invalid_expiry")
    func neitherExpiry() throws {
        let e = try #require(refusal(job(expiry: nil)))
        #expect(e.code == .invalidExpiry)
        #expect(e.mentions("neither", "exactly one"))
    }

    @Test("a non-positive expires_in is refused with invalid_expiry", arguments: [0, -1, Int64.min])
    func nonPositiveExpiresIn(seconds: Int64) throws {
        let e = try #require(refusal(job(expiry: #""expires_in":\#(seconds)"#)))
        #expect(e.code == .invalidExpiry)
        #expect(e.mentions("expires_in \(seconds)", "positive"))
    }

    @Test("a non-positive expires_at or negative starts_at is refused with invalid_expiry", arguments: [
        #""expires_at":0"#, #""expires_at":-5"#, #""expires_in":5,"starts_at":-1"#,
    ])
    func notEpochTimes(expiry: String) throws {
        let e = try #require(refusal(job(expiry: expiry)))
        #expect(e.code == .invalidExpiry)
        #expect(e.mentions("epoch seconds"))
    }

    @Test("a hash other than \"SHA1\" or \"SHA256\" (exact case) is refused with unsupported_hash", arguments: [
        "sha1", "sha256", "Sha256", "MD5", "SHA-256", "SHA512", "",
    ])
    func unsupportedHash(value: String) throws {
        let e = try #require(refusal(job(#""hash":"\#(value)""#)))
        #expect(e.code == .unsupportedHash)
        #expect(e.mentions("\"\(value)\"", "SHA1", "SHA256"))
    }

    @Test("an invalid key_id is refused with unknown_key", arguments: [
        "", "K 1", "K&1", "K=1", "K;1", #"K\"1"#, #"K\\1"#, "Ké", "K\\u00011", String(repeating: "K", count: 129),
    ])
    func invalidKeyID(value: String) throws {
        let e = try #require(refusal(job(#""key_id":"\#(value)""#)))
        #expect(e.code == .unknownKey)
        #expect(e.mentions("key_id"))
    }

    @Test("a key_id of 128 printable characters is accepted")
    func longestKeyID() throws {
        let id = String(repeating: "K", count: 127) + "~"
        #expect(try #require(accepted(job(#""key_id":"\#(id)""#))).keyID == id)
    }
}

@Suite("JobParser: url rules")
struct URLRuleTests {
    @Test("a URL with a fragment is refused with invalid_url")
    func fragment() throws {
        let e = try #require(refusal(job(url: objectURL + "#page=2")))
        #expect(e.code == .invalidURL)
        #expect(e.mentions("fragment"))
    }

    @Test("a URL that already has a signing parameter is refused with invalid_url", arguments: [
        "?Expires=1767225600", "?Policy=abc", "?a=1&Signature=xyz", "?Key-Pair-Id=K1&a=1", "?Hash-Algorithm=SHA256",
        "?a=1&Expires", "?&&Policy=",
    ])
    func signingParameter(query: String) throws {
        let e = try #require(refusal(job(url: objectURL + query)))
        #expect(e.code == .invalidURL)
        let name = ["Expires", "Policy", "Signature", "Key-Pair-Id", "Hash-Algorithm"].first { query.contains($0) }!
        #expect(e.mentions("signing query parameter \"\(name)\""))
    }

    @Test("parameters that merely resemble signing parameters are fine", arguments: [
        "?expires=1", "?a=Expires", "?ExpiresAt=1", "?x=1&policy=2", "/Signature?v=1",
    ])
    func lookalikeParameters(query: String) throws {
        #expect(accepted(job(url: objectURL + query)) != nil)
    }

    @Test("a URL with characters that must be percent-encoded is refused with invalid_url", arguments: [
        ("https://h.example/a b", "space", "%20"),
        ("https://h.example/caf\u{E9}", "non-ASCII", "%XX"),
        ("https://h.example/\u{65E5}", "non-ASCII", "%XX"),
        ("https://h.example/a\u{7F}", "control character (0x7F)", "percent-encode"),
        ("https://h.example/a\u{1}", "control character (0x01)", "percent-encode"),
        ("https://h.example/a\tb", "control character (0x09)", "percent-encode"),
        ("https://h.example/a\"b", "'\"'", "%22"),
        ("https://h.example/a\\b", "'\\'", "%5C"),
    ])
    func charactersToEncode(url: String, what: String, advice: String) throws {
        var w = JSONWriter()
        w.beginObject()
        w.field("id", "j"); w.field("reply_to", replyTo); w.field("url", url); w.field("expires_in", 60)
        w.endObject()
        let e = try #require(refusal(w.string))
        #expect(e.code == .invalidURL)
        #expect(e.mentions(what, advice))
    }

    @Test("a URL that is not absolute http(s) is refused with invalid_url", arguments: [
        ("/invoices/42.pdf", "not absolute"),
        ("invoices/42.pdf", "not absolute"),
        ("//d111111abcdef8.cloudfront.net/a", "not absolute"),
        ("d111111abcdef8.cloudfront.net:443/a", "scheme"),
        ("ftp://d111111abcdef8.cloudfront.net/a", "scheme \"ftp\" is not supported"),
        ("file:///etc/passwd", "scheme \"file\" is not supported"),
        ("wss://h.example/", "scheme \"wss\" is not supported"),
        ("HTTPS://h.example/", "lower case"),
        ("Http://h.example/", "lower case"),
    ])
    func notAbsoluteHTTP(url: String, problem: String) throws {
        let e = try #require(refusal(job(url: url)))
        #expect(e.code == .invalidURL)
        #expect(e.mentions(problem))
    }

    @Test("a URL without a host is refused with invalid_url", arguments: [
        "https:///path", "https://", "https://?a=1", "https://:443/a",
    ])
    func noHost(url: String) throws {
        let e = try #require(refusal(job(url: url)))
        #expect(e.code == .invalidURL)
        #expect(e.mentions("no host"))
    }

    @Test("a URL with a bad port is refused with invalid_url", arguments: [
        "https://h.example:/a", "https://h.example:0/a", "https://h.example:65536/a", "https://h.example:99999/a",
        "https://h.example:12a/a", "https://h.example:-1/", "https://h.example:443443/", "https://[::1]:x/",
    ])
    func badPort(url: String) throws {
        let e = try #require(refusal(job(url: url)))
        #expect(e.code == .invalidURL)
        #expect(e.mentions("invalid port", "1 to 65535"))
    }

    @Test("URLs with ports, IP hosts and queries are accepted", arguments: [
        "https://h.example:443/a", "http://h.example:8080", "https://h.example:65535/", "http://192.0.2.1/a?b=c&d",
        "https://[2001:db8::1]:8443/a", "https://h.example?x=1", "https://h.example/a%20b%22%5C?q=%C3%A9",
        "https://h.example/~user/a;b=c/*!$'()+,@:",
    ])
    func acceptedURLs(url: String) {
        #expect(accepted(job(url: url)) != nil)
    }

    @Test("a URL with user information is refused with invalid_url", arguments: [
        "https://user@h.example/a", "https://user:pass@h.example/a", "https://@h.example/",
    ])
    func userinfo(url: String) throws {
        let e = try #require(refusal(job(url: url)))
        #expect(e.code == .invalidURL)
        #expect(e.mentions("user information"))
    }

    @Test("a URL with a broken IPv6 host is refused with invalid_url", arguments: [
        "https://[::1/a", "https://[]/a", "https://[zz]/a", "https://[::1]x/a",
    ])
    func badIPv6Host(url: String) throws {
        #expect(try #require(refusal(job(url: url))).code == .invalidURL)
    }

    @Test("a URL over 8 KiB is refused with invalid_url; exactly 8 KiB is accepted")
    func tooLong() throws {
        let prefix = "https://h.example/"
        let exact = prefix + String(repeating: "a", count: URLRules.maximumLength - prefix.utf8.count)
        #expect(accepted(job(url: exact)) != nil)
        let e = try #require(refusal(job(url: exact + "a")))
        #expect(e.code == .invalidURL)
        #expect(e.mentions("\(URLRules.maximumLength + 1) bytes", "at most \(URLRules.maximumLength)"))
    }

    @Test("an empty URL is refused with invalid_url")
    func empty() throws {
        let e = try #require(refusal(job(url: "")))
        #expect(e.code == .invalidURL)
        #expect(e.mentions("empty"))
    }

    @Test("URL problems are reported before IP problems")
    func urlBeforeIP() throws {
        #expect(try #require(refusal(job(url: "ftp://h/", #""ip":"::1""#))).code == .invalidURL)
    }
}

@Suite("JobParser: ip")
struct IPRuleTests {
    func ipError(_ ip: String) -> SigningError? { refusal(job(#""ip":"\#(ip)""#)) }

    @Test("IPv6 is refused with invalid_ip", arguments: ["::1", "2001:db8::/32", "::ffff:192.0.2.1", "fe80::1%eth0"])
    func ipv6(ip: String) throws {
        let e = try #require(ipError(ip))
        #expect(e.code == .invalidIP)
        #expect(e.mentions("IPv6"))
    }

    @Test("an address with leading zeros is refused with invalid_ip", arguments: ["010.1.2.3", "10.01.2.3", "10.1.2.003", "10.1.2.00/32"])
    func leadingZeros(ip: String) throws {
        let e = try #require(ipError(ip))
        #expect(e.code == .invalidIP)
        #expect(e.mentions("leading zeros"))
    }

    @Test("a prefix with a leading zero is refused with invalid_ip", arguments: ["10.0.0.0/08", "10.1.2.3/032", "0.0.0.0/00"])
    func prefixLeadingZero(ip: String) throws {
        let e = try #require(ipError(ip))
        #expect(e.code == .invalidIP)
        #expect(e.mentions("prefix"))
    }

    @Test("host bits set below the prefix are refused with invalid_ip, suggesting the network", arguments: [
        ("10.1.2.3/24", "say 10.1.2.0/24"),
        ("192.0.2.255/25", "say 192.0.2.128/25"),
        ("1.2.3.4/0", "say 0.0.0.0/0"),
        ("10.255.0.0/9", "say 10.128.0.0/9"),
        ("255.255.255.255/31", "say 255.255.255.254/31"),
    ])
    func hostBits(ip: String, suggestion: String) throws {
        let e = try #require(ipError(ip))
        #expect(e.code == .invalidIP)
        #expect(e.mentions("host bits", suggestion))
    }

    @Test("a prefix over 32 is refused with invalid_ip", arguments: ["10.0.0.0/33", "10.0.0.0/99"])
    func prefixOver32(ip: String) throws {
        let e = try #require(ipError(ip))
        #expect(e.code == .invalidIP)
        #expect(e.mentions("over 32"))
    }

    @Test("text that is not an IPv4 address or range is refused with invalid_ip", arguments: [
        "", "garbage", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1.2.3.-4", "1..3.4", "1.2.3.4/", "1.2.3.4/a", "1.2.3.4/24/1",
        "1.2.3.4/+8", " 1.2.3.4", "1.2.3.4 ", "0x7f.0.0.1", "1.2.3.4/100", "١.2.3.4",
    ])
    func garbage(ip: String) throws {
        let e = try #require(ipError(ip))
        #expect(e.code == .invalidIP)
        #expect(e.mentions("ip \"\(ip)\""))
    }

    @Test("valid addresses and ranges are accepted, a bare address as /32", arguments: [
        ("192.0.2.7", "192.0.2.7/32"), ("192.0.2.0/24", "192.0.2.0/24"), ("0.0.0.0/0", "0.0.0.0/0"),
        ("255.255.255.255", "255.255.255.255/32"), ("10.0.0.0/8", "10.0.0.0/8"), ("0.0.0.0", "0.0.0.0/32"),
        ("203.0.113.9/32", "203.0.113.9/32"),
    ])
    func valid(ip: String, written: String) throws {
        let r = try #require(accepted(job(#""ip":"\#(ip)""#)))
        #expect(r.ip?.description == written)
    }

    @Test("a range contains exactly the addresses under its prefix")
    func contains() throws {
        let range = try IPv4Range(parsing: "10.1.2.0/24")
        #expect(range.contains(IPv4Range.parseAddress("10.1.2.255")!))
        #expect(!range.contains(IPv4Range.parseAddress("10.1.3.0")!))
        #expect(try IPv4Range(parsing: "0.0.0.0/0").contains(0xFFFF_FFFF))
    }
}

@Suite("JobParser: resource")
struct ResourceRuleTests {
    @Test("a resource that does not match the url is refused with invalid_resource", arguments: [
        "https://d111111abcdef8.cloudfront.net/other/*",
        "http://d111111abcdef8.cloudfront.net/*",
        "https://d111111abcdef8.cloudfront.net/invoices/42.pd",
        "https://*.cloudfront.net/invoices/4?.pdf/",
    ])
    func notMatching(resource: String) throws {
        let e = try #require(refusal(job(#""resource":"\#(resource)""#)))
        #expect(e.code == .invalidResource)
        #expect(e.mentions("does not match url"))
    }

    @Test("a resource with characters that must be percent-encoded is refused with invalid_resource", arguments: [
        ("https://h/a b*", "space"), ("https://h/\u{E9}*", "non-ASCII"), ("https://h/\\u0001*", "control character"),
        ("https://h/\\\"*", "'\"'"), ("https://h/\\\\*", "'\\'"), ("", "empty"),
    ])
    func badCharacters(resource: String, what: String) throws {
        let e = try #require(refusal(job(#""resource":"\#(resource)""#)))
        #expect(e.code == .invalidResource)
        #expect(e.mentions("resource", what))
    }

    @Test("a resource over 8 KiB is refused with invalid_resource")
    func tooLong() throws {
        let e = try #require(refusal(job(#""resource":"\#(String(repeating: "*", count: URLRules.maximumLength + 1))""#)))
        #expect(e.code == .invalidResource)
        #expect(e.mentions("bytes"))
    }

    @Test("resources matching the url are accepted", arguments: [
        "https://d111111abcdef8.cloudfront.net/invoices/*", "http*://d111111abcdef8.cloudfront.net/*", "*",
        "https://d111111abcdef8.cloudfront.net/invoices/4?.pdf", objectURL,
    ])
    func matching(resource: String) throws {
        #expect(try #require(accepted(job(#""resource":"\#(resource)""#))).resource == resource)
    }
}

@Suite("SigningRequest")
struct SigningRequestTests {
    @Test("the initializer applies the same checks as the job parser")
    func sameChecks() {
        #expect(signingError { _ = try SigningRequest(url: "https://h/#x", expiry: .after(seconds: 1)) }?.code == .invalidURL)
        #expect(signingError { _ = try SigningRequest(url: "https://h/", expiry: .after(seconds: 0)) }?.code == .invalidExpiry)
        #expect(signingError { _ = try SigningRequest(url: "https://h/", expiry: .at(0)) }?.code == .invalidExpiry)
        #expect(signingError { _ = try SigningRequest(url: "https://h/", expiry: .at(1), startsAt: -1) }?.code == .invalidExpiry)
        #expect(signingError { _ = try SigningRequest(url: "https://h/", expiry: .at(1), resource: "https://g/*") }?.code == .invalidResource)
        #expect(signingError { _ = try SigningRequest(url: "https://h/", expiry: .at(1), keyID: "a b") }?.code == .unknownKey)
        #expect(signingError { _ = try SigningRequest(url: "https://h/", expiry: .at(1)) } == nil)
    }
}

import Testing
import CFSignCore

@Suite("KeyGroupDocument")
struct KeyGroupDocumentTests {
    let contractExample = #"""
    {
      "version": 3,
      "active": "K2JCJMDEHXQW5F",
      "keys": [
        {"id": "K2JCJMDEHXQW5F", "private_key_file": "/etc/cfsign/keys/K2JCJMDEHXQW5F.pem"},
        {"id": "K1PREVIOUSKEY1", "private_key_file": "/etc/cfsign/keys/K1PREVIOUSKEY1.pem"}
      ]
    }
    """#

    func parse(_ text: String) throws(KeyGroupError) -> KeyGroupDocument { try KeyGroupDocument(json: Array(text.utf8)) }

    func refusal(_ text: String) -> KeyGroupError? {
        do { _ = try parse(text); return nil } catch { return error }
    }

    @Test("the contract's example group is read")
    func contractGroup() throws {
        let doc = try parse(contractExample)
        #expect(doc.version == 3)
        #expect(doc.active == "K2JCJMDEHXQW5F")
        #expect(doc.keys == [
            .init(id: "K2JCJMDEHXQW5F", source: .file("/etc/cfsign/keys/K2JCJMDEHXQW5F.pem")),
            .init(id: "K1PREVIOUSKEY1", source: .file("/etc/cfsign/keys/K1PREVIOUSKEY1.pem")),
        ])
        #expect(doc.key("K1PREVIOUSKEY1")?.source == .file("/etc/cfsign/keys/K1PREVIOUSKEY1.pem"))
        #expect(doc.key("nope") == nil)
    }

    @Test("inline PEM, public_key_pem, null optionals and unknown fields are read")
    func optionalMembers() throws {
        let doc = try parse(#"""
        {"version":1,"active":"A","comment":"x","keys":[
          {"id":"A","private_key_pem":"-----BEGIN PRIVATE KEY-----\n...","public_key_pem":"-----BEGIN PUBLIC KEY-----\n...","private_key_file":null},
          {"id":"B","private_key_file":"/k/b.pem","public_key_pem":null,"note":1}
        ]}
        """#)
        #expect(doc.keys[0] == .init(id: "A", source: .inlinePEM("-----BEGIN PRIVATE KEY-----\n..."), publicKeyPEM: "-----BEGIN PUBLIC KEY-----\n..."))
        #expect(doc.keys[1] == .init(id: "B", source: .file("/k/b.pem")))
    }

    @Test("json writes the contract's shape and reads back equal")
    func roundTrip() throws {
        let doc = try KeyGroupDocument(version: 7, active: "B", keys: [
            .init(id: "A", source: .inlinePEM("-----BEGIN PRIVATE KEY-----\nAB/+\n-----END PRIVATE KEY-----\n"), publicKeyPEM: "pub\n"),
            .init(id: "B", source: .file("/etc/cfsign/keys/B.pem")),
        ])
        let text = String(decoding: doc.json, as: UTF8.self)
        #expect(text == #"{"version":7,"active":"B","keys":[{"id":"A","private_key_pem":"-----BEGIN PRIVATE KEY-----\nAB/+\n-----END PRIVATE KEY-----\n","public_key_pem":"pub\n"},{"id":"B","private_key_file":"/etc/cfsign/keys/B.pem"}]}"#)
        #expect(try KeyGroupDocument(json: doc.json) == doc)
        #expect(try parse(String(decoding: parse(contractExample).json, as: UTF8.self)) == parse(contractExample))
    }

    @Test("a group that is refused says why", arguments: [
        ("{", "not valid JSON"),
        ("[]", "not a JSON object"),
        (#"{"active":"A","keys":[{"id":"A","private_key_file":"/a"}]}"#, "\"version\""),
        (#"{"version":"3","active":"A","keys":[{"id":"A","private_key_file":"/a"}]}"#, "\"version\""),
        (#"{"version":3.0,"active":"A","keys":[{"id":"A","private_key_file":"/a"}]}"#, "\"version\""),
        (#"{"version":0,"active":"A","keys":[{"id":"A","private_key_file":"/a"}]}"#, "version must be a positive integer, not 0"),
        (#"{"version":-2,"active":"A","keys":[{"id":"A","private_key_file":"/a"}]}"#, "not -2"),
        (#"{"version":1,"keys":[{"id":"A","private_key_file":"/a"}]}"#, "\"active\""),
        (#"{"version":1,"active":5,"keys":[{"id":"A","private_key_file":"/a"}]}"#, "\"active\""),
        (#"{"version":1,"active":"B","keys":[{"id":"A","private_key_file":"/a"}]}"#, "active key \"B\" is not among keys (A)"),
        (#"{"version":1,"active":"A"}"#, "\"keys\""),
        (#"{"version":1,"active":"A","keys":{"id":"A"}}"#, "\"keys\""),
        (#"{"version":1,"active":"A","keys":[]}"#, "keys is empty"),
        (#"{"version":1,"active":"A","keys":["A"]}"#, "keys[0] is a string, not an object"),
        (#"{"version":1,"active":"A","keys":[{"private_key_file":"/a"}]}"#, "keys[0] needs \"id\""),
        (#"{"version":1,"active":"A","keys":[{"id":7,"private_key_file":"/a"}]}"#, "keys[0] needs \"id\""),
        (#"{"version":1,"active":"A","keys":[{"id":"A","private_key_file":"/a"},{"id":"A","private_key_file":"/b"}]}"#, "key id \"A\" appears more than once"),
        (#"{"version":1,"active":"A B","keys":[{"id":"A B","private_key_file":"/a"}]}"#, "key id \"A B\" is not valid"),
        (#"{"version":1,"active":"","keys":[{"id":"","private_key_file":"/a"}]}"#, "key id \"\" is not valid"),
        (#"{"version":1,"active":"A","keys":[{"id":"A"}]}"#, "key \"A\" needs private_key_file"),
        (#"{"version":1,"active":"A","keys":[{"id":"A","private_key_file":null,"private_key_pem":null}]}"#, "key \"A\" needs private_key_file"),
        (#"{"version":1,"active":"A","keys":[{"id":"A","private_key_file":"/a","private_key_pem":"x"}]}"#, "key \"A\" has both private_key_file and private_key_pem"),
        (#"{"version":1,"active":"A","keys":[{"id":"A","private_key_file":""}]}"#, "key \"A\": private_key_file is empty"),
        (#"{"version":1,"active":"A","keys":[{"id":"A","private_key_file":5}]}"#, "key \"A\": private_key_file must be a string, not an integer"),
        (#"{"version":1,"active":"A","keys":[{"id":"A","private_key_pem":["x"]}]}"#, "key \"A\": private_key_pem must be a string, not an array"),
        (#"{"version":1,"active":"A","keys":[{"id":"A","private_key_file":"/a","public_key_pem":true}]}"#, "key \"A\": public_key_pem must be a string, not a boolean"),
    ])
    func refused(text: String, reason: String) throws {
        let e = try #require(refusal(text))
        #expect(e.reason.contains(reason))
        #expect(e.description == e.reason)
    }

    @Test("the memberwise initializer applies the same checks")
    func memberwiseChecks() {
        let a = KeyGroupDocument.Key(id: "A", source: .file("/a"))
        #expect(throws: KeyGroupError.self) { try KeyGroupDocument(version: 0, active: "A", keys: [a]) }
        #expect(throws: KeyGroupError.self) { try KeyGroupDocument(version: 1, active: "B", keys: [a]) }
        #expect(throws: KeyGroupError.self) { try KeyGroupDocument(version: 1, active: "A", keys: [a, a]) }
        #expect(throws: Never.self) { try KeyGroupDocument(version: 1, active: "A", keys: [a]) }
    }
}

@Suite("KeyID")
struct KeyIDTests {
    @Test("valid key ids", arguments: ["K2JCJMDEHXQW5F", "a", "!#$%'()*+,-./:<>?@[]^_`{|}~", String(repeating: "K", count: 128)])
    func valid(id: String) { #expect(KeyID.isValid(id)) }

    @Test("invalid key ids", arguments: ["", " ", "a b", "a&b", "a=b", "a;b", "a\"b", "a\\b", "a\u{7F}", "a\tb", "é", String(repeating: "K", count: 129)])
    func invalid(id: String) { #expect(!KeyID.isValid(id)) }
}

@Suite("Namespace")
struct NamespaceTests {
    @Test("every key of the default namespace starts with the {cfsign}: hash tag")
    func defaultKeys() {
        let n = Namespace.default
        #expect(n.name == "cfsign")
        #expect(n.prefix == "{cfsign}:")
        #expect(n.jobs == "{cfsign}:jobs")
        #expect(n.dead == "{cfsign}:dead")
        #expect(n.workers == "{cfsign}:workers")
        #expect(n.keyGroup == "{cfsign}:keygroup")
        #expect(n.keyGroupChanged == "{cfsign}:keygroup:changed")
        #expect(n.replyPrefix == "{cfsign}:reply:")
        #expect(n.reply("web-7") == "{cfsign}:reply:web-7")
        #expect(n.inflight(worker: "w1") == "{cfsign}:inflight:w1")
        #expect(n.heartbeat(worker: "w1") == "{cfsign}:worker:w1")
        #expect(n.description == "cfsign")
    }

    @Test("a custom namespace puts its own name in the hash tag")
    func customKeys() throws {
        let n = try Namespace("shop_eu-1.prod")
        #expect(n.jobs == "{shop_eu-1.prod}:jobs")
        #expect(n.reply("x") == "{shop_eu-1.prod}:reply:x")
        #expect(try Namespace(String(repeating: "n", count: 64)).name.count == 64)
    }

    @Test("names that would break the hash tag or overlap are refused", arguments: [
        "", "a{b", "a}b", "{cfsign}", "a:b", "a b", "a/b", "é", "a*", "a\n", String(repeating: "n", count: 65),
    ])
    func invalid(name: String) {
        let error = #expect(throws: InvalidNamespace.self) { try Namespace(name) }
        #expect(error?.name == name)
        #expect(error?.description.contains("1-64 characters") == true)
    }
}

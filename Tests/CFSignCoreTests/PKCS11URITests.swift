import Testing
import CFSignCore

@Suite("PKCS11URI")
struct PKCS11URITests {
    let module = "module-path=/usr/lib/softhsm/libsofthsm2.so"

    func refusal(_ text: String) -> String? {
        do { _ = try PKCS11URI(parsing: text); return nil } catch { return error.reason }
    }

    @Test("the contract's example URI is read: token, object, module-path, pin-source")
    func contractExample() throws {
        let uri = try PKCS11URI(parsing: "pkcs11:token=cfsign;object=K2JCJMDEHXQW5F?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/cfsign/pin")
        #expect(uri.token == "cfsign")
        #expect(uri.object == "K2JCJMDEHXQW5F")
        #expect(uri.id == nil)
        #expect(uri.modulePath == "/usr/lib/softhsm/libsofthsm2.so")
        #expect(uri.pin == .file("/etc/cfsign/pin"))
    }

    @Test("values are percent-decoded and id is raw bytes")
    func percentDecoding() throws {
        let uri = try PKCS11URI(parsing: "pkcs11:token=My%20Token;id=%01%a2%FF;type=private;serial=abc?\(module)&pin-source=file:///run/pin%20file")
        #expect(uri.token == "My Token")
        #expect(uri.id == [0x01, 0xA2, 0xFF])
        #expect(uri.serial == "abc")
        #expect(uri.pin == .file("/run/pin file"))
    }

    @Test("vendor x- attributes are ignored, slot-id is a number")
    func vendorAttributes() throws {
        let uri = try PKCS11URI(parsing: "pkcs11:x-vendor=1;object=K;slot-id=42?\(module)&x-other=2")
        #expect(uri.object == "K")
        #expect(uri.slotID == 42)
    }

    @Test("pin-value is read and masked in the description")
    func pinValueMasked() throws {
        let uri = try PKCS11URI(parsing: "pkcs11:object=K?\(module)&pin-value=s3cret")
        #expect(uri.pin == .value("s3cret"))
        #expect(!uri.description.contains("s3cret"))
        #expect(uri.description.contains("pin-value=***"))
    }

    @Test("a misspelt path attribute is refused by name")
    func unknownPathAttribute() {
        #expect(refusal("pkcs11:objet=K?\(module)")?.contains("unknown path attribute \"objet\"") == true)
    }

    @Test("an unknown query attribute is refused by name")
    func unknownQueryAttribute() {
        #expect(refusal("pkcs11:object=K?\(module)&pin=1234")?.contains("unknown query attribute \"pin\"") == true)
    }

    @Test("a URI naming no key (no object, no id) is refused")
    func namesNoKey() {
        #expect(refusal("pkcs11:token=T?\(module)")?.contains("object=") == true)
    }

    @Test("module-path is required and must be absolute")
    func modulePath() {
        #expect(refusal("pkcs11:object=K")?.contains("module-path") == true)
        #expect(refusal("pkcs11:object=K?module-path=libsofthsm2.so")?.contains("not an absolute path") == true)
        #expect(refusal("pkcs11:object=K?module-name=softhsm2")?.contains("module-name") == true)
    }

    @Test("pin-source other than a file is refused, and pin-source with pin-value")
    func pinSources() {
        #expect(refusal("pkcs11:object=K?\(module)&pin-source=|/bin/getpin")?.contains("pin-source") == true)
        #expect(refusal("pkcs11:object=K?\(module)&pin-source=file:relative")?.contains("absolute") == true)
        #expect(refusal("pkcs11:object=K?\(module)&pin-source=file:/p&pin-value=1")?.contains("both") == true)
    }

    @Test("a refusal never echoes a pin-value")
    func refusalHidesPIN() {
        let reason = refusal("pkcs11:objet=K?\(module)&pin-value=s3cret") ?? ""
        #expect(!reason.isEmpty)
        #expect(!reason.contains("s3cret"))
    }

    @Test("bad percent-encoding, repeated attributes and type=public are refused")
    func malformed() {
        #expect(refusal("pkcs11:object=K%4?\(module)")?.contains("percent") == true)
        #expect(refusal("pkcs11:object=K;object=L?\(module)")?.contains("more than once") == true)
        #expect(refusal("pkcs11:object=K;type=public?\(module)")?.contains("type=public") == true)
        #expect(refusal("pkcs11:object?\(module)")?.contains("without \"=\"") == true)
    }

    @Test("private_key_uri in a key group is parsed; it excludes private_key_file")
    func inKeyGroup() throws {
        let text = #"{"version":1,"active":"A","keys":[{"id":"A","private_key_uri":"pkcs11:token=T;object=A?module-path=/m.so&pin-source=file:/p"}]}"#
        let doc = try KeyGroupDocument(json: Array(text.utf8))
        guard case .pkcs11(let uri) = doc.keys[0].source else { Issue.record("not a pkcs11 source"); return }
        #expect(uri.object == "A")
        #expect(try KeyGroupDocument(json: doc.json) == doc)
        let both = #"{"version":1,"active":"A","keys":[{"id":"A","private_key_file":"/k.pem","private_key_uri":"pkcs11:object=A?module-path=/m.so"}]}"#
        do { _ = try KeyGroupDocument(json: Array(both.utf8)); Issue.record("accepted both") } catch {
            #expect(error.reason.contains("both private_key_file and private_key_uri"))
        }
    }

    @Test("a bad private_key_uri in a key group names the key and the attribute")
    func badURIInKeyGroup() {
        let text = #"{"version":1,"active":"A","keys":[{"id":"A","private_key_uri":"pkcs11:object=A"}]}"#
        do { _ = try KeyGroupDocument(json: Array(text.utf8)); Issue.record("accepted") } catch {
            #expect(error.reason.hasPrefix("key \"A\": private_key_uri"))
            #expect(error.reason.contains("module-path"))
        }
    }
}

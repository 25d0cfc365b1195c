import Testing
import CFSignCore

/// The one reader for documents cfsign acts on: duplicates are found at every depth, because two
/// readers of the same bytes may take different ones.
@Suite("JSONObjectDocument")
struct JSONObjectDocumentTests {
    func failure(_ text: String) -> JSONObjectDocument.Failure? {
        do throws(JSONObjectDocument.Failure) {
            _ = try JSONObjectDocument(parsing: Array(text.utf8)).refusingDuplicates()
            return nil
        } catch {
            return error
        }
    }

    @Test("a document without duplicates is read, members in order")
    func readsObject() throws {
        let doc = try JSONObjectDocument(parsing: Array(#"{"b":1,"a":{"c":[1,{"d":2}]}}"#.utf8))
        #expect(doc.members.map(\.0) == ["b", "a"])
        #expect(doc.duplicates.isEmpty)
        #expect(doc[member: "b"] == .integer(1))
    }

    @Test("duplicates are found at the top, in nested objects and inside arrays", arguments: [
        (#"{"a":1,"a":2}"#, "a"),
        (#"{"a":{"x":1,"x":2}}"#, "a.x"),
        (#"{"keys":[{"id":"K1"},{"id":"K2","id":"K3"}]}"#, "keys[1].id"),
    ])
    func duplicateFound(text: String, path: String) {
        guard case .duplicate(let found)? = failure(text) else {
            Issue.record("no duplicate found in \(text)")
            return
        }
        #expect(found == path)
    }

    @Test("the same name in two different objects is not a duplicate")
    func sameNameElsewhere() {
        #expect(failure(#"{"a":{"id":1},"b":{"id":2},"id":3}"#) == nil)
    }

    @Test("valid JSON of another type is notAnObject, invalid JSON a syntax failure")
    func notAnObject() {
        guard case .notAnObject(let type)? = failure("[1]") else { Issue.record("array accepted"); return }
        #expect(type == "an array")
        guard case .syntax? = failure("{") else { Issue.record("truncated object accepted"); return }
    }

    @Test("a key group with a duplicated field is refused, naming it")
    func keyGroupDuplicate() {
        let text = #"{"version":1,"active":"K1","active":"K2","keys":[{"id":"K1","private_key_file":"/k1"},{"id":"K2","private_key_file":"/k2"}]}"#
        do throws(KeyGroupError) {
            _ = try KeyGroupDocument(json: Array(text.utf8))
            Issue.record("a key group with two \"active\" members was accepted")
        } catch {
            #expect(error.description.contains("field \"active\" more than once"))
        }
    }
}

@Suite("JSONObjectDocument with many members")
struct JSONObjectDocumentLargeTests {
    @Test("a duplicate among more than 16 members is found too")
    func manyMembers() throws {
        let members = (0..<40).map { #""m\#($0)":\#($0)"# } + [#""m7":0"#]
        let doc = try JSONObjectDocument(parsing: Array(("{" + members.joined(separator: ",") + "}").utf8))
        #expect(doc.duplicates == ["m7"])
    }
}

@Suite("Jobs with many members")
struct JobManyMembersTests {
    @Test("a job of thousands of members still finds a duplicated field, without comparing every pair")
    func manyMembersDuplicate() {
        let filler = (0..<3000).map { #""x\#($0)":0"# }.joined(separator: ",")
        let text = #"{"id":"j","reply_to":"{cfsign}:reply:w",\#(filler),"url":"https://d.example/a","expires_in":60,"url":"https://d.example/b"}"#
        guard case .refused(_, _, let error) = JobParser.parse(Array(text.utf8), namespace: .default) else {
            Issue.record("not refused")
            return
        }
        #expect(error.code == .invalidJob)
        #expect(error.message.contains("\"url\" appears more than once"))
    }
}

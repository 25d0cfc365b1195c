import Foundation
import NIOCore
import Testing
@testable import CFSignEdge

/// What a viewer learns when the edge's origin fails: the reason in words, never credentials.
@Suite("OriginBackend")
struct OriginBackendTests {
    @Test("the origin's user and password are never shown to a viewer")
    func credentialsAreHidden() {
        let backend = OriginBackend(base: "http://user:secret@127.0.0.1:9000/bucket", fallbackCacheControl: nil)
        #expect(backend.shownBase == "http://***@127.0.0.1:9000/bucket")
    }

    @Test("an @ in the origin's path is not taken for credentials")
    func atInPathIsKept() {
        let backend = OriginBackend(base: "http://127.0.0.1:9000/a@b", fallbackCacheControl: nil)
        #expect(backend.shownBase == "http://127.0.0.1:9000/a@b")
    }

    @Test("a system error reaches the viewer as its strerror text and number")
    func systemErrorInWords() {
        #expect(OriginBackend.reason(IOError(errnoCode: ECONNREFUSED, reason: "connect")) == "Connection refused (errno 111)")
    }
}

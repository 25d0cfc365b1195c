import Testing
@testable import CFSignEdge

/// `Range: bytes=...` as the edge serves it (RFC 9110 14.1.2, one range only): what S3 and
/// CloudFront answer for the same header on a 1,000-byte object.
@Suite("Byte ranges")
struct ByteRangeTests {
    let size: Int64 = 1000

    @Test("first-last is served as given", arguments: [("bytes=0-0", 0, 0), ("bytes=0-499", 0, 499), ("bytes=500-999", 500, 999)] as [(String, Int64, Int64)])
    func firstLast(header: String, first: Int64, last: Int64) {
        #expect(ByteRange.parse(header, size: size) == .range(first, last))
    }

    @Test("a last byte past the end is clipped to the end")
    func lastClipped() {
        #expect(ByteRange.parse("bytes=900-5000", size: size) == .range(900, 999))
    }

    @Test("first- runs to the end")
    func openEnded() {
        #expect(ByteRange.parse("bytes=990-", size: size) == .range(990, 999))
    }

    @Test("-n is the last n bytes, and all of them when n exceeds the size")
    func suffix() {
        #expect(ByteRange.parse("bytes=-10", size: size) == .range(990, 999))
        #expect(ByteRange.parse("bytes=-5000", size: size) == .range(0, 999))
    }

    @Test("a range starting at or past the end is unsatisfiable (416)", arguments: ["bytes=1000-", "bytes=1000-1000", "bytes=5000-6000"])
    func pastEnd(header: String) {
        #expect(ByteRange.parse(header, size: size) == .unsatisfiable)
    }

    @Test("the last 0 bytes, or any range of an empty file, is unsatisfiable")
    func emptySuffix() {
        #expect(ByteRange.parse("bytes=-0", size: size) == .unsatisfiable)
        #expect(ByteRange.parse("bytes=0-", size: 0) == .unsatisfiable)
        #expect(ByteRange.parse("bytes=-5", size: 0) == .unsatisfiable)
    }

    @Test("what is not one byte range is ignored and the whole file is sent", arguments: [
        "items=0-10", "bytes=0-10,20-30", "bytes=", "bytes=-", "bytes=a-b", "bytes=10-5", "bytes=+1-2", "bytes=1-+2", "bytes=0x10-",
    ])
    func ignored(header: String) {
        #expect(ByteRange.parse(header, size: size) == .ignore, "\(header)")
    }

    @Test("numbers longer than Int64 mean past any end, never a trap")
    func hugeNumbers() {
        #expect(ByteRange.parse("bytes=99999999999999999999999-", size: size) == .unsatisfiable)
        #expect(ByteRange.parse("bytes=0-99999999999999999999999", size: size) == .range(0, 999))
        #expect(ByteRange.parse("bytes=-99999999999999999999999", size: size) == .range(0, 999))
    }

    @Test("the unit and spaces are read as S3 reads them")
    func caseAndSpaces() {
        #expect(ByteRange.parse(" Bytes=0-1 ", size: size) == .range(0, 1))
    }
}

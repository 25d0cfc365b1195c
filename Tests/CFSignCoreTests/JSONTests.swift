import Testing
import CFSignCore

@Suite("JSONReader")
struct JSONReaderTests {
    func parse(_ text: String) throws(JSONSyntaxError) -> JSONValue { try JSONReader.parse(text) }

    func refuses(_ bytes: [UInt8]) -> JSONSyntaxError? {
        do { _ = try JSONReader.parse(bytes); return nil } catch { return error }
    }

    func refuses(_ text: String) -> JSONSyntaxError? { refuses(Array(text.utf8)) }

    @Test("a document with every kind of value is read in document order")
    func validDocument() throws {
        let value = try parse(#" { "a" : [1, -2, true, false, null, "s", {}, []], "b": {"c": 0.5} } "#)
        #expect(value == .object([
            ("a", .array([.integer(1), .integer(-2), .bool(true), .bool(false), .null, .string("s"), .object([]), .array([])])),
            ("b", .object([("c", .number("0.5"))])),
        ]))
    }

    @Test("scalars are documents on their own")
    func scalars() throws {
        #expect(try parse("42") == .integer(42))
        #expect(try parse(#""x""#) == .string("x"))
        #expect(try parse("null") == .null)
    }

    @Test("the simple escapes are decoded")
    func simpleEscapes() throws {
        #expect(try parse(#""\" \\ \/ \b \f \n \r \t""#) == .string("\" \\ / \u{8} \u{C} \n \r \t"))
    }

    @Test("\\u escapes decode to the character, including non-ASCII BMP characters")
    func unicodeEscapes() throws {
        #expect(try parse(#""\u0041\u00e9\u20AC\u0000""#) == .string("Aé€\u{0}"))
    }

    @Test("a surrogate pair in \\u escapes decodes to one astral character")
    func surrogatePair() throws {
        #expect(try parse(#""\ud83d\ude00""#) == .string("😀"))
        #expect(try parse(#""a\uD834\uDD1Eb""#) == .string("a𝄞b"))
    }

    @Test("unpaired or misordered surrogates are refused", arguments: [
        #""\ud83d""#, #""\ud83dx""#, #""\ud83d\u0041""#, #""\ude00""#, #""\ude00\ud83d""#,
    ])
    func unpairedSurrogate(text: String) {
        let error = refuses(text)
        #expect(error?.reason.contains("surrogate") == true)
    }

    @Test("raw UTF-8 in strings is kept as is")
    func rawUTF8() throws {
        #expect(try parse("\"é😀\"") == .string("é😀"))
    }

    @Test("invalid UTF-8 in a string is refused", arguments: [
        [0x22, 0xFF, 0x22],                    // never valid
        [0x22, 0xC3, 0x22],                    // truncated sequence
        [0x22, 0xC0, 0xAF, 0x22],              // overlong '/'
        [0x22, 0xED, 0xA0, 0x80, 0x22],        // UTF-8-encoded surrogate
        [0x22, 0x5C, 0x6E, 0xFE, 0x22],        // after an escape (the slow path)
    ] as [[UInt8]])
    func invalidUTF8(bytes: [UInt8]) {
        #expect(refuses(bytes)?.reason.contains("UTF-8") == true)
    }

    @Test("syntax errors are refused with the offset where reading stopped", arguments: [
        "", " ", "{", "[1,]", "[1 2]", #"{"a" 1}"#, #"{"a":1,}"#, "{a:1}", "tru", "nul", "[true false]",
        #""abc"#, #""\x""#, #""\u12G4""#, "'s'", "{} x", "[] []", "NaN", "Infinity",
        "\"a\u{1}b\"", "\"tab\there\"", "\"line\nbreak\"",
    ])
    func syntaxErrors(text: String) {
        let error = refuses(text)
        #expect(error != nil)
        if let error { #expect(error.description.hasPrefix("not valid JSON at byte \(error.offset)")) }
    }

    @Test("nesting up to the maximum depth is read")
    func depthAtLimit() throws {
        let depth = JSONReader.maximumDepth
        let text = String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
        var value = try parse(text)
        for _ in 1..<depth {
            guard case .array(let items) = value, items.count == 1 else { Issue.record("unexpected shape"); return }
            value = items[0]
        }
        #expect(value == .array([]))
    }

    @Test("nesting one level deeper than the maximum is refused")
    func depthOverLimit() {
        let depth = JSONReader.maximumDepth + 1
        let arrays = String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
        let objects = String(repeating: #"{"a":"#, count: depth) + "1" + String(repeating: "}", count: depth)
        #expect(refuses(arrays)?.reason.contains("nested deeper") == true)
        #expect(refuses(objects)?.reason.contains("nested deeper") == true)
    }

    @Test("10,000 nested '[' do not crash and are refused")
    func hostileNesting() {
        #expect(refuses(String(repeating: "[", count: 10_000))?.reason.contains("nested deeper") == true)
        #expect(refuses(String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)) != nil)
    }

    @Test("numbers with leading zeros are refused", arguments: ["01", "-01", "00", "[007]", "0123.5"])
    func leadingZeros(text: String) {
        #expect(refuses(text)?.reason.contains("leading zero") == true)
    }

    @Test("malformed numbers are refused", arguments: ["-", "+1", ".5", "1.", "1e", "1e+", "--1", "0x10", "1.e3"])
    func malformedNumbers(text: String) {
        #expect(refuses(text) != nil)
    }

    @Test("a number with a fraction or exponent is .number, kept as written", arguments: [
        "1e3", "1E3", "1.5", "-0.0", "2e-1", "1.0", "0e0", "10E+2",
    ])
    func nonIntegers(text: String) throws {
        #expect(try parse(text) == .number(text))
    }

    @Test("integers without fraction or exponent that fit 64 bits are .integer")
    func integers() throws {
        #expect(try parse("0") == .integer(0))
        #expect(try parse("-0") == .integer(0))
        #expect(try parse("1767225600") == .integer(1_767_225_600))
        #expect(try parse("9223372036854775807") == .integer(.max))
        #expect(try parse("-9223372036854775808") == .integer(.min))
    }

    @Test("integers beyond 64 bits are kept as .number text, not rounded")
    func hugeIntegers() throws {
        #expect(try parse("9223372036854775808") == .number("9223372036854775808"))
        #expect(try parse("-9223372036854775809") == .number("-9223372036854775809"))
        let huge = String(repeating: "9", count: 400)
        #expect(try parse(huge) == .number(huge))
    }

    @Test("duplicate member names are kept in order; the subscript reads the first")
    func duplicateKeys() throws {
        let value = try parse(#"{"a":1,"b":2,"a":3}"#)
        #expect(value == .object([("a", .integer(1)), ("b", .integer(2)), ("a", .integer(3))]))
        #expect(value[member: "a"] == .integer(1))
        #expect(value[member: "zz"] == nil)
        #expect(JSONValue.array([])[member: "a"] == nil)
    }

    @Test("object equality is order-sensitive")
    func objectOrder() {
        #expect(JSONValue.object([("a", .null), ("b", .null)]) != .object([("b", .null), ("a", .null)]))
        #expect(JSONValue.integer(1) != .number("1"))
    }
}

@Suite("JSONWriter")
struct JSONWriterTests {
    func quoted(_ s: String) -> String {
        var out: [UInt8] = []
        JSONWriter.appendQuoted(s, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    @Test("'\"' and '\\' are escaped")
    func quoteAndBackslash() {
        #expect(quoted(#"a"b\c"#) == #""a\"b\\c""#)
    }

    @Test("control characters are escaped: short forms where JSON has them, \\u00XX otherwise")
    func controlCharacters() {
        #expect(quoted("\n\r\t\u{8}\u{C}") == #""\n\r\t\b\f""#)
        #expect(quoted("\u{0}\u{1}\u{1F}") == #""\u0000\u0001\u001f""#)
    }

    @Test("'/' is not escaped")
    func slashNotEscaped() {
        #expect(quoted("https://example.com/a/b") == #""https://example.com/a/b""#)
    }

    @Test("non-ASCII is written as UTF-8, not escaped")
    func nonASCIIKept() {
        #expect(quoted("é€😀") == "\"é€😀\"")
        #expect(quoted("\u{7F}") == "\"\u{7F}\"")
    }

    @Test("the writer emits compact JSON with commas only between members and items")
    func compactStructure() {
        var w = JSONWriter()
        w.beginObject()
        w.field("a", "x")
        w.key("b")
        w.beginArray()
        w.value(1)
        w.value(Int64(-2))
        w.value(true)
        w.null()
        w.beginObject()
        w.endObject()
        w.beginArray()
        w.endArray()
        w.endArray()
        w.field("c", false)
        w.key("d")
        w.raw(Array(#"{"n":1}"#.utf8))
        w.field("e", 7)
        w.endObject()
        #expect(w.string == #"{"a":"x","b":[1,-2,true,null,{},[]],"c":false,"d":{"n":1},"e":7}"#)
    }

    @Test("a JSONValue written and read back is the same value")
    func roundTrip() throws {
        let value = JSONValue.object([
            ("s", .string("q\"\\/\n\u{1}é😀")), ("i", .integer(.min)), ("n", .number("1.5e3")),
            ("a", .array([.null, .bool(true), .object([("x", .array([]))])])), ("s", .string("dup")),
        ])
        var w = JSONWriter()
        w.value(value)
        #expect(try JSONReader.parse(w.bytes) == value)
    }
}

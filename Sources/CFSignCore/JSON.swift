/// A JSON value as cfsign reads it: strict (RFC 8259), bounded in depth, and exact about numbers.
///
/// Foundation's decoders blur what the contract needs to tell apart (`1e3` for an integer, duplicate
/// keys, which field had the wrong type), and on Linux its encoder escapes `/`; so cfsign reads and
/// writes its small JSON documents itself.
public enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    /// A number written without fraction or exponent that fits in 64 bits.
    case integer(Int64)
    /// Any other number (kept as its text, so nothing is rounded away silently).
    case number(String)
    case string(String)
    case array([JSONValue])
    /// Members in document order; duplicate names are kept, so callers can refuse them.
    case object([(String, JSONValue)])

    public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): return true
        case let (.bool(a), .bool(b)): return a == b
        case let (.integer(a), .integer(b)): return a == b
        case let (.number(a), .number(b)): return a == b
        case let (.string(a), .string(b)): return a == b
        case let (.array(a), .array(b)): return a == b
        case let (.object(a), .object(b)):
            return a.count == b.count && zip(a, b).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    /// A short name of the value's type, for error messages.
    public var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .integer: return "an integer"
        case .number: return "a non-integer number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}

/// Why a document is not JSON, with the byte offset where reading stopped.
public struct JSONSyntaxError: Error, Sendable, CustomStringConvertible {
    public let offset: Int
    public let reason: String
    public var description: String { "not valid JSON at byte \(offset): \(reason)" }
}

/// A strict, non-recursive-on-input-size JSON reader over UTF-8 bytes.
package struct JSONReader {
    /// Nesting deeper than this is refused, so a hostile `[[[[…` cannot exhaust the stack.
    public static let maximumDepth = 32

    public static func parse(_ bytes: some Collection<UInt8>) throws(JSONSyntaxError) -> JSONValue {
        try parse(Array(bytes))
    }

    /// The same for an array, without generic dispatch (what the worker calls, once per job).
    public static func parse(_ array: [UInt8]) throws(JSONSyntaxError) -> JSONValue {
        try array.withUnsafeBufferPointer { (buffer) throws(JSONSyntaxError) -> JSONValue in
            var reader = Cursor(bytes: buffer)
            reader.skipWhitespace()
            let value = try reader.value(depth: 0)
            reader.skipWhitespace()
            guard reader.index == buffer.count else { throw reader.error("unexpected data after the JSON value") }
            return value
        }
    }

    public static func parse(_ text: String) throws(JSONSyntaxError) -> JSONValue {
        try parse(Array(text.utf8))
    }

    private struct Cursor {
        let bytes: UnsafeBufferPointer<UInt8>
        var index = 0

        init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

        func error(_ reason: String) -> JSONSyntaxError { JSONSyntaxError(offset: index, reason: reason) }

        mutating func skipWhitespace() {
            while index < bytes.count {
                switch bytes[index] {
                case 0x20, 0x09, 0x0A, 0x0D: index += 1
                default: return
                }
            }
        }

        mutating func expect(_ literal: StaticString) throws(JSONSyntaxError) {
            let count = literal.utf8CodeUnitCount
            guard index + count <= bytes.count else { throw error("unexpected end of input") }
            let start = literal.utf8Start
            for i in 0..<count where bytes[index + i] != start[i] {
                throw error("invalid literal")
            }
            index += count
        }

        mutating func value(depth: Int) throws(JSONSyntaxError) -> JSONValue {
            guard index < bytes.count else { throw error("unexpected end of input") }
            switch bytes[index] {
            case UInt8(ascii: "{"):
                guard depth < JSONReader.maximumDepth else { throw error("nested deeper than \(JSONReader.maximumDepth) levels") }
                return try object(depth: depth + 1)
            case UInt8(ascii: "["):
                guard depth < JSONReader.maximumDepth else { throw error("nested deeper than \(JSONReader.maximumDepth) levels") }
                return try array(depth: depth + 1)
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): try expect("true"); return .bool(true)
            case UInt8(ascii: "f"): try expect("false"); return .bool(false)
            case UInt8(ascii: "n"): try expect("null"); return .null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
            default: throw error("unexpected character")
            }
        }

        mutating func object(depth: Int) throws(JSONSyntaxError) -> JSONValue {
            index += 1
            var members: [(String, JSONValue)] = []
            members.reserveCapacity(8)  // a job has 3-8 members: one allocation, no regrowth
            skipWhitespace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "}") { index += 1; return .object(members) }
            while true {
                skipWhitespace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw error("expected a member name") }
                let name = try string()
                skipWhitespace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw error("expected ':'") }
                index += 1
                skipWhitespace()
                members.append((name, try value(depth: depth)))
                skipWhitespace()
                guard index < bytes.count else { throw error("unexpected end of input") }
                if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
                if bytes[index] == UInt8(ascii: "}") { index += 1; return .object(members) }
                throw error("expected ',' or '}'")
            }
        }

        mutating func array(depth: Int) throws(JSONSyntaxError) -> JSONValue {
            index += 1
            var items: [JSONValue] = []
            skipWhitespace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "]") { index += 1; return .array(items) }
            while true {
                skipWhitespace()
                items.append(try value(depth: depth))
                skipWhitespace()
                guard index < bytes.count else { throw error("unexpected end of input") }
                if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
                if bytes[index] == UInt8(ascii: "]") { index += 1; return .array(items) }
                throw error("expected ',' or ']'")
            }
        }

        mutating func number() throws(JSONSyntaxError) -> JSONValue {
            let start = index
            var isInteger = true
            if bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard index < bytes.count, isDigit(bytes[index]) else { throw error("expected a digit") }
            if bytes[index] == UInt8(ascii: "0") {
                index += 1
                if index < bytes.count, isDigit(bytes[index]) { throw error("leading zero in a number") }
            } else {
                while index < bytes.count, isDigit(bytes[index]) { index += 1 }
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
                isInteger = false
                index += 1
                guard index < bytes.count, isDigit(bytes[index]) else { throw error("expected a digit after '.'") }
                while index < bytes.count, isDigit(bytes[index]) { index += 1 }
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
                isInteger = false
                index += 1
                if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
                guard index < bytes.count, isDigit(bytes[index]) else { throw error("expected a digit in the exponent") }
                while index < bytes.count, isDigit(bytes[index]) { index += 1 }
            }
            let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
            if isInteger, let value = Int64(text) { return .integer(value) }
            return .number(text)
        }

        func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }

        mutating func string() throws(JSONSyntaxError) -> String {
            index += 1  // opening quote
            let start = index
            // Every byte OR'ed together: below 0x80, the string is ASCII and so valid UTF-8.
            var high: UInt8 = 0
            // Fast path: no escapes.
            while index < bytes.count {
                let b = bytes[index]
                if b == UInt8(ascii: "\"") {
                    let slice = UnsafeBufferPointer(rebasing: bytes[start..<index])
                    // ASCII (every URL, id and name in a job) needs no validation: `String(validating:)`
                    // is generic and looked its metadata up at run time on every call, about a
                    // sixth of a job's parse (perf, BENCHMARKS.md).
                    let s: String
                    if high < 0x80 {
                        s = String(decoding: slice, as: UTF8.self)
                    } else {
                        guard let valid = String(validating: slice, as: UTF8.self) else { throw error("string is not valid UTF-8") }
                        s = valid
                    }
                    index += 1
                    return s
                }
                if b == UInt8(ascii: "\\") { break }
                if b < 0x20 { throw error("control character in a string") }
                high |= b
                index += 1
            }
            var out = Array(UnsafeBufferPointer(rebasing: bytes[start..<index]))
            while index < bytes.count {
                let b = bytes[index]
                switch b {
                case UInt8(ascii: "\""):
                    index += 1
                    guard let s = String(validating: out, as: UTF8.self) else { throw error("string is not valid UTF-8") }
                    return s
                case UInt8(ascii: "\\"):
                    index += 1
                    guard index < bytes.count else { throw error("unexpected end of input") }
                    let e = bytes[index]
                    index += 1
                    switch e {
                    case UInt8(ascii: "\""): out.append(0x22)
                    case UInt8(ascii: "\\"): out.append(0x5C)
                    case UInt8(ascii: "/"): out.append(0x2F)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0C)
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "u"):
                        var scalar = try hex4()
                        if (0xD800...0xDBFF).contains(scalar) {
                            guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                                throw error("unpaired surrogate in \\u escape")
                            }
                            index += 2
                            let low = try hex4()
                            guard (0xDC00...0xDFFF).contains(low) else { throw error("unpaired surrogate in \\u escape") }
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        } else if (0xDC00...0xDFFF).contains(scalar) {
                            throw error("unpaired surrogate in \\u escape")
                        }
                        out.append(contentsOf: Array(String(Character(Unicode.Scalar(scalar)!)).utf8))
                    default: throw error("invalid escape")
                    }
                default:
                    if b < 0x20 { throw error("control character in a string") }
                    out.append(b)
                    index += 1
                }
            }
            throw error("unterminated string")
        }

        mutating func hex4() throws(JSONSyntaxError) -> UInt32 {
            guard index + 4 <= bytes.count else { throw error("unexpected end of input") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let b = bytes[index]
                let d: UInt32
                switch b {
                case 0x30...0x39: d = UInt32(b - 0x30)
                case 0x41...0x46: d = UInt32(b - 0x41 + 10)
                case 0x61...0x66: d = UInt32(b - 0x61 + 10)
                default: throw error("invalid \\u escape")
                }
                v = v << 4 | d
                index += 1
            }
            return v
        }
    }
}

/// Writes compact JSON (no whitespace between tokens), `/` unescaped, members in the order given.
///
/// Replies, dead entries and heartbeats are built with it, so their bytes are predictable.
package struct JSONWriter: Sendable {
    public private(set) var bytes: [UInt8] = []
    private var needsComma: [Bool] = []

    public init(capacity: Int = 256) { bytes.reserveCapacity(capacity) }

    public var string: String { String(decoding: bytes, as: UTF8.self) }

    private mutating func separate() {
        if let last = needsComma.last {
            if last { bytes.append(UInt8(ascii: ",")) }
            needsComma[needsComma.count - 1] = true
        }
    }

    public mutating func beginObject() { separate(); bytes.append(UInt8(ascii: "{")); needsComma.append(false) }
    public mutating func endObject() { bytes.append(UInt8(ascii: "}")); needsComma.removeLast() }
    public mutating func beginArray() { separate(); bytes.append(UInt8(ascii: "[")); needsComma.append(false) }
    public mutating func endArray() { bytes.append(UInt8(ascii: "]")); needsComma.removeLast() }

    /// Writes a member name; the value written next belongs to it.
    public mutating func key(_ name: String) {
        separate()
        Self.appendQuoted(name, to: &bytes)
        bytes.append(UInt8(ascii: ":"))
        needsComma[needsComma.count - 1] = false
    }

    public mutating func value(_ s: String) { separate(); Self.appendQuoted(s, to: &bytes) }
    public mutating func value(_ n: Int64) { separate(); bytes.append(contentsOf: String(n).utf8) }
    public mutating func value(_ n: Int) { value(Int64(n)) }
    public mutating func value(_ b: Bool) { separate(); bytes.append(contentsOf: (b ? "true" : "false").utf8) }
    public mutating func null() { separate(); bytes.append(contentsOf: "null".utf8) }

    /// Appends already-encoded JSON (e.g. a nested document) as the next value.
    public mutating func raw(_ json: [UInt8]) { separate(); bytes.append(contentsOf: json) }

    public mutating func value(_ v: JSONValue) {
        switch v {
        case .null: null()
        case .bool(let b): value(b)
        case .integer(let n): value(n)
        case .number(let text): separate(); bytes.append(contentsOf: text.utf8)
        case .string(let s): value(s)
        case .array(let items):
            beginArray()
            for item in items { value(item) }
            endArray()
        case .object(let members):
            beginObject()
            for (k, item) in members { key(k); value(item) }
            endObject()
        }
    }

    public mutating func field(_ name: String, _ s: String) { key(name); value(s) }
    public mutating func field(_ name: String, _ n: Int64) { key(name); value(n) }
    public mutating func field(_ name: String, _ n: Int) { key(name); value(n) }
    public mutating func field(_ name: String, _ b: Bool) { key(name); value(b) }

    /// JSON string escaping: `"` `\` and control characters; everything else as UTF-8.
    /// A string with nothing to escape (every URL, id and key id cfsign writes) is copied in one
    /// block instead of byte by byte.
    public static func appendQuoted(_ s: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        var s = s
        let plain = s.withUTF8 { utf8 in
            guard !utf8.contains(where: { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C }) else { return false }
            out.append(contentsOf: utf8)
            return true
        }
        if plain {
            out.append(UInt8(ascii: "\""))
            return
        }
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""): out.append(0x5C); out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C); out.append(0x5C)
            case 0x0A: out.append(0x5C); out.append(UInt8(ascii: "n"))
            case 0x0D: out.append(0x5C); out.append(UInt8(ascii: "r"))
            case 0x09: out.append(0x5C); out.append(UInt8(ascii: "t"))
            case 0x08: out.append(0x5C); out.append(UInt8(ascii: "b"))
            case 0x0C: out.append(0x5C); out.append(UInt8(ascii: "f"))
            case 0..<0x20:
                let hex: [UInt8] = Array("0123456789abcdef".utf8)
                out.append(contentsOf: [0x5C, UInt8(ascii: "u"), 0x30, 0x30, hex[Int(b >> 4)], hex[Int(b & 0xF)]])
            default: out.append(b)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}

extension JSONValue {
    /// An integer literal (no fraction, no exponent) clamped to 64 bits: `.integer` as is, and a
    /// longer digit string, which the reader keeps as `.number`, as `Int64.max` or `Int64.min` by
    /// its sign. Nil for any other value (`1.0`, `1e3`, strings...).
    ///
    /// Lets a range check treat 10^20 like 2^63-1 (both "too large") instead of as another type.
    public var clampedInteger: Int64? {
        switch self {
        case .integer(let n): return n
        case .number(let text):
            let digits = text.utf8.first == UInt8(ascii: "-") ? text.utf8.dropFirst() : text.utf8[...]
            guard !digits.isEmpty, digits.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
            return text.utf8.first == UInt8(ascii: "-") ? .min : .max
        default: return nil
        }
    }

    /// The member named `name` in an object (the first, if duplicated).
    public subscript(member name: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        return members.first { $0.0 == name }?.1
    }
}

/// A JSON object document read with duplicate member names found at every depth: the one reader
/// for the documents cfsign acts on (jobs, key groups, policies). Two readers of the same bytes
/// (this worker, a producer's library, CloudFront) may take the first or the last of a duplicated
/// name, so a document with one is ambiguous and is refused, never read either way.
package struct JSONObjectDocument: Sendable {
    /// Why a document is not a usable JSON object.
    public enum Failure: Error, Sendable, CustomStringConvertible {
        case syntax(JSONSyntaxError)
        /// The document is valid JSON of another type (`typeName`: "an array", ...).
        case notAnObject(typeName: String)
        /// A member name appears twice in one object; `path` is where (`keys[1].id`, `Statement[0]`).
        case duplicate(path: String)

        public var description: String {
            switch self {
            case .syntax(let error): return error.description
            case .notAnObject(let typeName): return "\(typeName), not a JSON object"
            case .duplicate(let path): return "field \"\(path)\" appears more than once"
            }
        }
    }

    /// The whole document (an `.object`).
    public let value: JSONValue
    /// Top-level members in document order.
    public let members: [(String, JSONValue)]
    /// Paths of every member name that appears more than once in its object, in document order.
    public let duplicates: [String]
    /// The top-level names among them (a name with a `.` in it cannot be told from a path).
    public let memberDuplicates: [String]

    /// Reads `bytes` as a JSON object, noting duplicates; callers that must tell which duplicate it
    /// was (a job's `id`) read `duplicates`, the others call `refusingDuplicates()`.
    public init(parsing bytes: some Collection<UInt8>) throws(Failure) {
        let value: JSONValue
        do { value = try JSONReader.parse(bytes) } catch { throw .syntax(error) }
        guard case .object(let members) = value else { throw .notAnObject(typeName: value.typeName) }
        self.value = value
        self.members = members
        var found: [String] = []
        var topLevel: [String] = []
        Self.collectDuplicates(value, path: "", into: &found, topLevel: &topLevel)
        self.duplicates = found
        self.memberDuplicates = topLevel
    }

    /// Throws `.duplicate` for the first duplicated name at any depth.
    public func refusingDuplicates() throws(Failure) -> JSONObjectDocument {
        if let first = duplicates.first { throw .duplicate(path: first) }
        return self
    }

    /// The top-level member named `name`.
    public subscript(member name: String) -> JSONValue? { value[member: name] }

    private static func collectDuplicates(_ value: JSONValue, path: String, into found: inout [String], topLevel: inout [String]) {
        switch value {
        case .object(let members):
            // Jobs have a dozen members: comparing pairs is cheaper than hashing each name.
            var seen = members.count > 16 ? Set<String>(minimumCapacity: members.count) : nil
            for (n, (name, member)) in members.enumerated() {
                let repeated = seen != nil ? !seen!.insert(name).inserted : members[..<n].contains { $0.0 == name }
                if repeated {
                    let memberPath = path.isEmpty ? name : "\(path).\(name)"
                    if !found.contains(memberPath) { found.append(memberPath) }
                    if path.isEmpty, !topLevel.contains(name) { topLevel.append(name) }
                }
                switch member {
                case .object, .array: collectDuplicates(member, path: path.isEmpty ? name : "\(path).\(name)", into: &found, topLevel: &topLevel)
                default: break
                }
            }
        case .array(let items):
            var ignored: [String] = []  // names inside an array are never top-level
            for (n, item) in items.enumerated() { collectDuplicates(item, path: "\(path)[\(n)]", into: &found, topLevel: &ignored) }
        default:
            return
        }
    }
}

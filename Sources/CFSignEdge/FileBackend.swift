import CFSignHTTP
import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Serves files under a folder the way a CDN in front of a bucket would: Content-Type from the
/// extension, Content-Length, Last-Modified, ETag, single byte ranges, conditional requests, and
/// never anything outside the folder.
struct FileBackend: Sendable {
    /// The folder, as a real path (no symlinks, no trailing slash).
    let root: String
    let cacheControl: String
    /// Bodies larger than this are streamed from the file instead of read into memory first.
    static let streamThreshold: Int64 = 1 << 20

    /// `forwardURI` is the request's path and query with the signing parameters stripped.
    func respond(forwardURI: String, request: HTTPRequest, isHead: Bool) -> HTTPResponse {
        let rawPath = String(forwardURI.prefix { $0 != "?" })
        guard let decoded = Self.percentDecode(rawPath) else {
            return EdgeResponses.badRequest("the path \(rawPath) has a malformed percent-encoding")
        }
        guard !decoded.contains("\0") else { return EdgeResponses.badRequest("the path contains a NUL byte") }
        let key = String(decoded.drop { $0 == "/" })
        let segments = decoded.split(separator: "/", omittingEmptySubsequences: true)
        if segments.contains("..") {
            return EdgeResponses.forbiddenPath("path_traversal", "the path \(decoded) has a '..' segment; the edge never serves anything outside its root")
        }
        let candidate = ([root] + segments.filter { $0 != "." }.map(String.init)).joined(separator: "/")
        guard var resolved = Self.realPath(candidate) else { return EdgeResponses.notFound(key) }
        guard isInsideRoot(resolved) else {
            return EdgeResponses.forbiddenPath("outside_root", "the path \(decoded) resolves outside the served folder (a symbolic link?)")
        }
        var info = stat()
        guard stat(resolved, &info) == 0 else { return EdgeResponses.notFound(key) }
        if (info.st_mode & S_IFMT) == S_IFDIR {
            // A folder: its index.html, if it has one (inside the root too), as a static site host would.
            guard let index = Self.realPath(resolved + "/index.html"), isInsideRoot(index),
                  stat(index, &info) == 0 else { return EdgeResponses.notFound(key) }
            resolved = index
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else { return EdgeResponses.notFound(key) }
        return serve(path: resolved, info: info, request: request, isHead: isHead, key: key)
    }

    private func isInsideRoot(_ path: String) -> Bool {
        path == root || path.hasPrefix(root == "/" ? "/" : root + "/")
    }

    private func serve(path: String, info: stat, request: HTTPRequest, isHead: Bool, key: String) -> HTTPResponse {
        let size = Int64(info.st_size)
        #if canImport(Darwin)
        let mtime = Int64(info.st_mtimespec.tv_sec)
        let mtimeNanos = mtime &* 1_000_000_000 &+ Int64(info.st_mtimespec.tv_nsec)  // wrapping: an ETag, never a trap
        #else
        let mtime = Int64(info.st_mtim.tv_sec)
        let mtimeNanos = mtime &* 1_000_000_000 &+ Int64(info.st_mtim.tv_nsec)  // wrapping: an ETag, never a trap
        #endif
        let etag = "\"" + String(UInt64(bitPattern: size), radix: 16) + "-" + String(UInt64(bitPattern: mtimeNanos), radix: 16) + "\""
        let lastModified = HTTPDate.format(mtime)
        var headers: [(name: String, value: String)] = [
            ("ETag", etag), ("Last-Modified", lastModified), ("Cache-Control", cacheControl), ("Accept-Ranges", "bytes"),
        ]

        // Conditional GET/HEAD (RFC 9110 13.2.2): If-None-Match wins over If-Modified-Since.
        if let inm = request.header("If-None-Match") {
            if Self.etagListMatches(inm, etag, weak: true) { return HTTPResponse(status: 304, headers: headers + [("Content-Length", "0")]) }
        } else if let ims = request.header("If-Modified-Since").flatMap(HTTPDate.parse), mtime <= ims {
            return HTTPResponse(status: 304, headers: headers + [("Content-Length", "0")])
        }

        headers.insert(("Content-Type", Self.contentType(path)), at: 0)
        var status = 200
        var start: Int64 = 0
        var length = size
        if let rangeHeader = request.header("Range"), rangeApplies(request.header("If-Range"), etag: etag, lastModified: lastModified) {
            switch ByteRange.parse(rangeHeader, size: size) {
            case .ignore:
                break
            case .unsatisfiable:
                headers.removeAll { $0.name == "Content-Type" }
                var response = EdgeResponses.xmlError(416, code: "InvalidRange", message: "The requested range is not satisfiable",
                                                      extra: [("RangeRequested", rangeHeader), ("ActualObjectSize", String(size))])
                response.headers += [("Content-Range", "bytes */\(size)"), ("Accept-Ranges", "bytes"), ("ETag", etag), ("Last-Modified", lastModified)]
                return response
            case .range(let first, let last):
                status = 206
                start = first
                length = last - first + 1
                headers.append(("Content-Range", "bytes \(first)-\(last)/\(size)"))
            }
        }
        headers.append(("Content-Length", String(length)))
        if isHead { return HTTPResponse(status: status, headers: headers) }
        if length > Self.streamThreshold {
            // Large files (videos, archives) are streamed in chunks by the server, never held whole.
            var response = HTTPResponse(status: status, headers: headers)
            response.file = HTTPResponse.FileBody(path: path, offset: start, length: length)
            return response
        }
        guard let body = Self.read(path, offset: start, count: length) else {
            return EdgeResponses.xmlError(500, code: "InternalError", message: "the file \(key) could not be read")
        }
        return HTTPResponse(status: status, headers: headers, body: body)
    }

    /// If-Range: the range applies only when the validator still matches (strong ETag or exact date).
    private func rangeApplies(_ ifRange: String?, etag: String, lastModified: String) -> Bool {
        guard let ifRange = ifRange?.trimmingCharacters(in: .whitespaces) else { return true }
        if ifRange.hasPrefix("\"") || ifRange.hasPrefix("W/") { return ifRange == etag }
        return ifRange == lastModified
    }

    static func etagListMatches(_ list: String, _ etag: String, weak: Bool) -> Bool {
        for item in list.split(separator: ",") {
            var tag = item.trimmingCharacters(in: .whitespaces)
            if tag == "*" { return true }
            if weak, tag.hasPrefix("W/") { tag.removeFirst(2) }
            if tag == etag { return true }
        }
        return false
    }

    private static func read(_ path: String, offset: Int64, count: Int64) -> [UInt8]? {
        guard let fd = FileDescriptor.openForReading(path) else { return nil }
        defer { try? fd.close() }
        return fd.bytes(at: offset, count: Int(count))
    }

    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// Percent-decodes a path (`+` stays `+`: it is a space only in form bodies). Nil when a `%` is
    /// not followed by two hex digits or the result is not UTF-8.
    static func percentDecode(_ text: String) -> String? {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        var bytes = text.utf8.makeIterator()
        func hex(_ b: UInt8) -> UInt8? {
            switch b {
            case 0x30...0x39: return b - 0x30
            case 0x41...0x46: return b - 0x41 + 10
            case 0x61...0x66: return b - 0x61 + 10
            default: return nil
            }
        }
        while let b = bytes.next() {
            if b == 0x25 {
                guard let h = bytes.next().flatMap(hex), let l = bytes.next().flatMap(hex) else { return nil }
                out.append(h << 4 | l)
            } else {
                out.append(b)
            }
        }
        return String(validating: out, as: UTF8.self)
    }

    static let contentTypes: [String: String] = [
        "pdf": "application/pdf",
        "html": "text/html; charset=utf-8", "htm": "text/html; charset=utf-8",
        "txt": "text/plain; charset=utf-8", "csv": "text/csv; charset=utf-8", "md": "text/markdown; charset=utf-8",
        "json": "application/json", "xml": "application/xml",
        "css": "text/css; charset=utf-8", "js": "text/javascript; charset=utf-8", "mjs": "text/javascript; charset=utf-8",
        "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif", "svg": "image/svg+xml",
        "webp": "image/webp", "avif": "image/avif", "ico": "image/x-icon",
        "mp4": "video/mp4", "m4v": "video/mp4", "webm": "video/webm", "mov": "video/quicktime",
        "mp3": "audio/mpeg", "m4a": "audio/mp4", "wav": "audio/wav", "ogg": "audio/ogg",
        "m3u8": "application/vnd.apple.mpegurl", "ts": "video/mp2t",
        "zip": "application/zip", "gz": "application/gzip", "wasm": "application/wasm",
        "woff": "font/woff", "woff2": "font/woff2",
    ]

    /// By extension (case-insensitive); `application/octet-stream` for anything else.
    static func contentType(_ path: String) -> String {
        let name = path.split(separator: "/").last.map(String.init) ?? path
        guard let dot = name.lastIndex(of: "."), dot != name.startIndex else { return "application/octet-stream" }
        return contentTypes[name[name.index(after: dot)...].lowercased()] ?? "application/octet-stream"
    }
}

/// A `Range: bytes=...` header against a file of `size` bytes: one range only (RFC 9110 14.1.2).
enum ByteRange: Equatable {
    /// Not a single byte range this edge serves (syntax error, another unit, several ranges): send the whole file.
    case ignore
    /// 416: the range starts at or past the end (or asks for the last 0 bytes).
    case unsatisfiable
    /// First and last byte, inclusive.
    case range(Int64, Int64)

    static func parse(_ header: String, size: Int64) -> ByteRange {
        let text = header.trimmingCharacters(in: .whitespaces)
        guard text.lowercased().hasPrefix("bytes=") else { return .ignore }
        let spec = text.dropFirst("bytes=".count).trimmingCharacters(in: .whitespaces)
        guard !spec.contains(","), let dash = spec.firstIndex(of: "-") else { return .ignore }
        let firstText = spec[..<dash].trimmingCharacters(in: .whitespaces)
        let lastText = spec[spec.index(after: dash)...].trimmingCharacters(in: .whitespaces)
        func number(_ s: String) -> Int64? {
            guard !s.isEmpty, s.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
            return Int64(s) ?? Int64.max  // absurdly long numbers: past any end
        }
        if firstText.isEmpty {
            // bytes=-n: the last n bytes.
            guard let n = number(lastText) else { return .ignore }
            if n == 0 || size == 0 { return .unsatisfiable }
            return .range(max(0, size - n), size - 1)
        }
        guard let first = number(firstText) else { return .ignore }
        var last = size - 1
        if !lastText.isEmpty {
            guard let l = number(lastText) else { return .ignore }
            if l < first { return .ignore }
            last = min(l, size - 1)
        }
        if first >= size { return .unsatisfiable }
        return .range(first, last)
    }
}

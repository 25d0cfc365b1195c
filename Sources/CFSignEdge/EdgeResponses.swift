import CFSignCore
import CFSignHTTP
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The responses the edge makes itself, in CloudFront's and S3's style.
enum EdgeResponses {
    /// The response header that names why a request was refused (`expired`, `bad_signature`, ...).
    static let refusalHeader = "X-Cfsign-Refusal"

    /// `<?xml ...?><Error><Code>...</Code><Message>...</Message></Error>`, as CloudFront and S3 answer.
    static func xmlError(_ status: Int, code: String, message: String, extra: [(String, String)] = [], headers: [(name: String, value: String)] = []) -> HTTPResponse {
        var body = #"<?xml version="1.0" encoding="UTF-8"?><Error><Code>"# + escape(code) + "</Code><Message>" + escape(message) + "</Message>"
        for (name, value) in extra { body += "<\(name)>\(escape(value))</\(name)>" }
        body += "</Error>\n"
        return HTTPResponse(status: status, headers: [("Content-Type", "text/xml")] + headers, body: Array(body.utf8))
    }

    /// 403 for a request CloudFront would refuse: MissingKey when it is not signed at all,
    /// AccessDenied with the plain reason otherwise.
    static func refused(_ refusal: Refusal) -> HTTPResponse {
        let header = [(name: refusalHeader, value: refusal.reason.rawValue)]
        if refusal.reason == .missingKeyPairID {
            return xmlError(403, code: "MissingKey", message: "Missing Key-Pair-Id query parameter or cookie value", headers: header)
        }
        return xmlError(403, code: "AccessDenied", message: "Access denied: " + refusal.message, headers: header)
    }

    /// 403 for a signed request whose path is not allowed (`..`, outside the root).
    static func forbiddenPath(_ reason: String, _ message: String) -> HTTPResponse {
        xmlError(403, code: "AccessDenied", message: "Access denied: " + message, headers: [(refusalHeader, reason)])
    }

    static func notFound(_ key: String) -> HTTPResponse {
        xmlError(404, code: "NoSuchKey", message: "The specified key does not exist.", extra: [("Key", key)])
    }

    static func methodNotAllowed(_ method: String) -> HTTPResponse {
        xmlError(405, code: "MethodNotAllowed", message: "The method \(method) is not allowed; this edge serves GET and HEAD only.",
                 headers: [("Allow", "GET, HEAD")])
    }

    static func badRequest(_ message: String) -> HTTPResponse {
        xmlError(400, code: "InvalidURI", message: message)
    }

    static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for c in text.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            default:
                // XML 1.0 has no way to carry most control characters; they never appear in our messages.
                if c.value < 0x20 && c != "\t" && c != "\n" { out += "?" } else { out.unicodeScalars.append(c) }
            }
        }
        return out
    }
}

/// HTTP dates (`Sun, 06 Nov 1994 08:49:37 GMT`): Last-Modified, Date, If-Modified-Since.
public enum HTTPDate {
    private static let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    public static func format(_ epochSeconds: Int64) -> String {
        var t = time_t(epochSeconds)
        var parts = tm()
        gmtime_r(&t, &parts)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) \(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }

    /// Parses the IMF-fixdate form (the only one senders may generate); nil for anything else.
    public static func parse(_ text: String) -> Int64? {
        // "Sun, 06 Nov 1994 08:49:37 GMT"
        let fields = text.split(separator: " ")
        guard fields.count == 6, fields[5] == "GMT", let day = Int64(fields[1]),
              let monthIndex = months.firstIndex(of: String(fields[2])), let year = Int64(fields[3]) else { return nil }
        let clock = fields[4].split(separator: ":")
        guard clock.count == 3, let h = Int64(clock[0]), let m = Int64(clock[1]), let s = Int64(clock[2]),
              (1...31).contains(day), (0...23).contains(h), (0...59).contains(m), (0...60).contains(s) else { return nil }
        func two(_ v: Int64) -> String { v < 10 ? "0\(v)" : "\(v)" }
        guard let t = Timestamps.parse("\(year)-\(two(Int64(monthIndex) + 1))-\(two(day))T\(two(h)):\(two(m)):\(two(s))Z") else { return nil }
        return t
    }
}

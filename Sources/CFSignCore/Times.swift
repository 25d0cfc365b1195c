/// The command line's time and duration forms (CLI.md, "Everywhere").
public enum Durations {
    /// Seconds, or a number with `s`, `m`, `h`, `d`: `3600`, `90m`, `12h`, `30d`.
    public static func parse(_ text: String) -> Int64? {
        guard let last = text.last else { return nil }
        let multiplier: Int64
        var digits = Substring(text)
        switch last {
        case "s": multiplier = 1; digits = digits.dropLast()
        case "m": multiplier = 60; digits = digits.dropLast()
        case "h": multiplier = 3600; digits = digits.dropLast()
        case "d": multiplier = 86400; digits = digits.dropLast()
        default: multiplier = 1
        }
        guard !digits.isEmpty, digits.count <= 15, digits.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
              let n = Int64(digits) else { return nil }
        let (v, overflow) = n.multipliedReportingOverflow(by: multiplier)
        return overflow ? nil : v
    }

    /// `2592000` → `30d`, `5400` → `1h30m`, for messages.
    public static func describe(_ seconds: Int64) -> String {
        if seconds <= 0 { return "\(seconds)s" }
        var rest = seconds
        var parts: [String] = []
        for (unit, size) in [("d", Int64(86400)), ("h", 3600), ("m", 60), ("s", 1)] where rest >= size {
            parts.append("\(rest / size)\(unit)")
            rest %= size
        }
        return parts.joined()
    }

    public static let help = "seconds, or a number with s, m, h or d (3600, 90m, 12h, 30d)"
}

public enum Timestamps {
    /// Epoch seconds, or ISO 8601 `YYYY-MM-DDTHH:MM:SS` with `Z` or `±HH:MM` (fractions are refused:
    /// CloudFront's conditions are whole seconds).
    public static func parse(_ text: String) -> Int64? {
        if !text.isEmpty, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), text.count <= 15 {
            return Int64(text)
        }
        let b = Array(text.utf8)
        guard b.count >= 20 else { return nil }
        func num(_ r: Range<Int>) -> Int64? {
            guard r.upperBound <= b.count, b[r].allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
            return Int64(String(decoding: b[r], as: UTF8.self))
        }
        guard let year = num(0..<4), b[4] == UInt8(ascii: "-"), let month = num(5..<7), b[7] == UInt8(ascii: "-"),
              let day = num(8..<10), b[10] == UInt8(ascii: "T") || b[10] == UInt8(ascii: "t") || b[10] == UInt8(ascii: " "),
              let hour = num(11..<13), b[13] == UInt8(ascii: ":"), let minute = num(14..<16), b[16] == UInt8(ascii: ":"),
              let second = num(17..<19)
        else { return nil }
        guard (1...12).contains(month), day >= 1, day <= daysIn(month: month, year: year), hour <= 23, minute <= 59, second <= 60 else { return nil }
        var offset: Int64 = 0
        let zone = b[19...]
        if zone.count == 1, zone.first == UInt8(ascii: "Z") || zone.first == UInt8(ascii: "z") {
            offset = 0
        } else if zone.count == 6, zone.first == UInt8(ascii: "+") || zone.first == UInt8(ascii: "-"),
                  let oh = num(20..<22), b[22] == UInt8(ascii: ":"), let om = num(23..<25), oh <= 23, om <= 59 {
            offset = (oh * 3600 + om * 60) * (zone.first == UInt8(ascii: "-") ? -1 : 1)
        } else {
            return nil
        }
        // Four-digit year, two-digit fields: every term below is far inside 64 bits.
        guard let days = daysFromCivil(year: year, month: month, day: day) else { return nil }
        return days * 86400 + hour * 3600 + minute * 60 + second - offset
    }

    /// Years `daysFromCivil` accepts: wide enough for any date a person types, narrow enough that
    /// no step of the arithmetic can overflow.
    static let yearRange: ClosedRange<Int64> = -1_000_000_000...1_000_000_000

    public static let help = "epoch seconds or ISO 8601 (2027-03-01T00:00:00Z)"

    static func daysIn(month: Int64, year: Int64) -> Int64 {
        switch month {
        case 2: return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    /// Howard Hinnant's days-from-civil: days since 1970-01-01 in the proleptic Gregorian calendar.
    /// Nil outside `yearRange`, for a month outside 1...12 or a day outside 1...31.
    static func daysFromCivil(year: Int64, month: Int64, day: Int64) -> Int64? {
        guard yearRange.contains(year), (1...12).contains(month), (1...31).contains(day) else { return nil }
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146097 + doe - 719468
    }

    /// `YYYY-MM-DDTHH:MM:SSZ` for an epoch time, for messages.
    /// Any Int64 (a policy read from a URL can hold one): floor division without `t - 86399`,
    /// which would overflow at Int64.min; every later step stays inside 64 bits.
    public static func iso8601(_ t: Int64) -> String {
        let (q, r) = t.quotientAndRemainder(dividingBy: 86400)
        let days = r < 0 ? q - 1 : q
        let secs = r < 0 ? r + 86400 : r
        let z = days + 719468
        let era = (z >= 0 ? z : z - 146096) / 146097
        let doe = z - era * 146097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        let y = yoe + era * 400 + (m <= 2 ? 1 : 0)
        func two(_ v: Int64) -> String { v < 10 ? "0\(v)" : "\(v)" }
        let year = (0...999).contains(y) ? String(String(y + 10000).dropFirst()) : "\(y)"
        return "\(year)-\(two(m))-\(two(d))T\(two(secs / 3600)):\(two(secs % 3600 / 60)):\(two(secs % 60))Z"
    }
}

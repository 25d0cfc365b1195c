import Testing
import CFSignCore

/// Attack 1 and 7 (issue 13): every number a producer or an operator writes is range-checked or
/// read with overflow-safe arithmetic, so it gives a code or is accepted, never a trap; and one
/// class of extreme value gives one code (docs/PROTOCOL.md, "Expiry classes").
@Suite("Numeric bounds of every input number")
struct NumericBoundsTests {
    static let now: Int64 = 1_767_000_000
    static let huge = String(repeating: "9", count: 400)
    static let max = String(Int64.max), min = String(Int64.min)
    /// One past Int64 each way: the reader keeps them as text, the parser clamps them.
    static let pastMax = "9223372036854775808", pastMin = "-9223372036854775809"

    /// What a job with `members` (raw JSON, spliced in) gets: "ok", an error code, or "dead".
    static func outcome(_ members: String, maximum: Int64? = 30 * 86400) -> String {
        switch JobParser.parse(Array(("{\"id\":\"n\",\"reply_to\":\"{cfsign}:reply:x\",\"url\":\"\(objectURL)\"," + members + "}").utf8), namespace: ns) {
        case .dead: return "dead"
        case .refused(_, _, let e): return e.code.rawValue
        case .job(let job):
            do {
                _ = try SigningPlan(job.request, now: now, limits: SigningLimits(maximumLifetime: maximum))
                return "ok"
            } catch {
                return error.code.rawValue
            }
        }
    }

    @Test("expires_at at every bound gives one code per class", arguments: [
        (min, "invalid_expiry"), (pastMin, "invalid_expiry"), ("-" + huge, "invalid_expiry"), ("-1", "invalid_expiry"),
        ("0", "invalid_expiry"), ("-0", "invalid_expiry"), (String(now), "invalid_expiry"), (String(now + 1), "ok"),
        (String(now + 30 * 86400), "ok"), (String(now + 30 * 86400 + 1), "ttl_too_long"),
        (String(SigningLimits.latestExpiry + 1), "ttl_too_long"), (max, "ttl_too_long"), (pastMax, "ttl_too_long"),
        (huge, "ttl_too_long"), ("1e300", "invalid_job"), ("-1e300", "invalid_job"), ("1.0", "invalid_job"),
    ] as [(String, String)])
    func expiresAt(value: String, code: String) {
        #expect(Self.outcome("\"expires_at\":\(value)") == code, "expires_at \(value.prefix(30))")
    }

    @Test("expires_in at every bound gives one code per class", arguments: [
        (min, "invalid_expiry"), (pastMin, "invalid_expiry"), ("-" + huge, "invalid_expiry"), ("-1", "invalid_expiry"),
        ("0", "invalid_expiry"), ("-0", "invalid_expiry"), ("1", "ok"), (String(30 * 86400), "ok"),
        (String(30 * 86400 + 1), "ttl_too_long"), ("100000000000", "ttl_too_long"), (max, "ttl_too_long"),
        (pastMax, "ttl_too_long"), (huge, "ttl_too_long"), ("1e300", "invalid_job"), ("-1e300", "invalid_job"),
        ("1.0", "invalid_job"),
    ] as [(String, String)])
    func expiresIn(value: String, code: String) {
        #expect(Self.outcome("\"expires_in\":\(value)") == code, "expires_in \(value.prefix(30))")
    }

    @Test("without a maximum lifetime, anything past 9999-12-31 is ttl_too_long at any magnitude", arguments: [
        "\"expires_in\":\(max)", "\"expires_in\":\(huge)", "\"expires_in\":\(SigningLimits.latestExpiry - now + 1)",
        "\"expires_at\":\(SigningLimits.latestExpiry + 1)", "\"expires_at\":\(max)", "\"expires_at\":\(huge)",
    ] as [String])
    func noMaximum(member: String) {
        #expect(Self.outcome(member, maximum: nil) == "ttl_too_long", "\(member.prefix(40)) without max")
    }

    @Test("without a maximum lifetime, up to 9999-12-31T23:59:59Z is signed", arguments: [
        "\"expires_in\":\(SigningLimits.latestExpiry - now)", "\"expires_at\":\(SigningLimits.latestExpiry)", "\"expires_in\":100000000000",
    ] as [String])
    func noMaximumInRange(member: String) {
        #expect(Self.outcome(member, maximum: nil) == "ok", "\(member)")
    }

    @Test("starts_at at every bound is accepted or invalid_expiry", arguments: [
        (min, "invalid_expiry"), (pastMin, "invalid_expiry"), ("-1", "invalid_expiry"), ("0", "ok"), ("-0", "ok"),
        (String(now + 3599), "ok"), (String(now + 3600), "invalid_expiry"), (max, "invalid_expiry"),
        (pastMax, "invalid_expiry"), (huge, "invalid_expiry"), ("1e300", "invalid_job"), ("-1e300", "invalid_job"),
        ("1.0", "invalid_job"),
    ] as [(String, String)])
    func startsAt(value: String, code: String) {
        #expect(Self.outcome("\"expires_in\":3600,\"starts_at\":\(value)") == code, "starts_at \(value.prefix(30))")
    }

    @Test("round_expiry at every bound is accepted or invalid_expiry", arguments: [
        (min, "invalid_expiry"), (pastMin, "invalid_expiry"), ("-1", "invalid_expiry"), ("0", "ok"), ("-0", "ok"),
        (String(SigningLimits.maximumRounding), "ok"), (String(SigningLimits.maximumRounding + 1), "invalid_expiry"),
        (max, "invalid_expiry"), (pastMax, "invalid_expiry"), (huge, "invalid_expiry"), ("1e300", "invalid_job"),
        ("-1e300", "invalid_job"), ("1.0", "invalid_job"),
    ] as [(String, String)])
    func roundExpiry(value: String, code: String) {
        #expect(Self.outcome("\"expires_in\":3600,\"round_expiry\":\(value)") == code, "round_expiry \(value.prefix(30))")
    }

    @Test("round_expiry at its bound on an expiry near 9999-12-31 never rounds past it")
    func roundingNearLatestExpiry() throws {
        let member = "\"expires_at\":\(SigningLimits.latestExpiry - 5),\"round_expiry\":\(SigningLimits.maximumRounding)"
        #expect(Self.outcome(member, maximum: nil) == "ok")
    }

    @Test("enqueued_at_ms outside its documented range is read as absent, never refusing the job", arguments: [
        (min, nil), (pastMin, nil), ("-1", nil), ("0", 0), ("-0", 0), ("1767000000000", 1_767_000_000_000),
        (String(Job.validEnqueuedAt.upperBound), Job.validEnqueuedAt.upperBound),
        (String(Job.validEnqueuedAt.upperBound + 1), nil), (max, nil), (pastMax, nil), (huge, nil), ("1e300", nil),
        ("-1e300", nil), ("1.0", nil), ("\"1767000000000\"", nil),
    ] as [(String, Int64?)])
    func enqueuedAt(value: String, kept: Int64?) throws {
        let text = job(#""enqueued_at_ms":\#(value)"#)
        guard case .job(let j) = intake(text) else {
            Issue.record("enqueued_at_ms \(value.prefix(30)) refused the job")
            return
        }
        #expect(j.enqueuedAtMilliseconds == kept, "enqueued_at_ms \(value.prefix(30))")
        // What the worker does with it: subtract it from a clock reading.
        if let e = j.enqueuedAtMilliseconds { _ = Int64(1_767_000_000_000) - e }
    }

    @Test("key-group version at every bound is a positive integer below Int64.max, else refused", arguments: [
        (min, false), (pastMin, false), ("-1", false), ("0", false), ("-0", false), ("1", true),
        (String(KeyGroupDocument.maximumVersion), true), (String(KeyGroupDocument.maximumVersion + 1), false),
        (max, false), (pastMax, false), (huge, false), ("1e300", false), ("-1e300", false), ("1.0", false),
    ] as [(String, Bool)])
    func keyGroupVersion(value: String, valid: Bool) {
        let text = #"{"version":\#(value),"active":"K1","keys":[{"id":"K1","private_key_file":"/k.pem"}]}"#
        do {
            let document = try KeyGroupDocument(json: Array(text.utf8))
            #expect(valid, "version \(value.prefix(30)) was accepted")
            // The next version (`cfsign keygroup set` without a version) can always be written.
            _ = document.version + 1
        } catch {
            #expect(!valid, "version \(value.prefix(30)) was refused: \(error)")
            #expect(error.reason.contains("version"))
        }
    }

    @Test("the JSON reader keeps every number exact, whatever its size", arguments: [
        ("-0", JSONValue.integer(0)), ("0", .integer(0)), (max, .integer(.max)), (min, .integer(.min)),
        (pastMax, .number(pastMax)), (pastMin, .number(pastMin)), ("1e300", .number("1e300")),
        ("-1e300", .number("-1e300")), ("1.0", .number("1.0")), ("1E+2", .number("1E+2")),
    ] as [(String, JSONValue)])
    func jsonNumbers(text: String, value: JSONValue) throws {
        #expect(try JSONReader.parse(text) == value, "JSON \(text)")
    }

    @Test("an integer literal too long for 64 bits is clamped by its sign; other numbers are not integers", arguments: [
        (pastMax, Int64.max), (pastMin, Int64.min), (huge, Int64.max), ("-" + huge, Int64.min), ("1e300", nil),
        ("-1e300", nil), ("1.0", nil), ("-0", 0),
    ] as [(String, Int64?)])
    func clamped(text: String, expected: Int64?) throws {
        #expect(try JSONReader.parse(text).clampedInteger == expected, "JSON \(text.prefix(30))")
    }

    @Test("a 60,000-digit number is read without trapping")
    func enormousDigitString() throws {
        let digits = String(repeating: "7", count: 60_000)
        #expect(try JSONReader.parse(digits).clampedInteger == .max)
        #expect(Self.outcome("\"expires_in\":\(digits)") == "ttl_too_long")
    }

    @Test("durations at their bounds parse or are refused, never overflow", arguments: [
        ("0", 0), ("999999999999999", 999_999_999_999_999), ("9999999999999999", nil), ("999999999999999d", nil),
        ("106751991167300d", 106_751_991_167_300 * 86400), ("106751991167301d", nil), (max, nil), (min, nil), ("-0", nil),
        ("1e300", nil), ("1.0", nil), ("", nil), ("d", nil),
    ] as [(String, Int64?)])
    func durations(text: String, seconds: Int64?) {
        #expect(Durations.parse(text) == seconds, "duration \(text)")
    }

    @Test("timestamps at their bounds parse or are refused, never overflow", arguments: [
        ("9999-12-31T23:59:59Z", SigningLimits.latestExpiry), ("0000-01-01T00:00:00Z", -62_167_219_200),
        ("0000-01-01T00:00:00+23:59", -62_167_219_200 - 86340), ("9999-12-31T23:59:60-23:59", SigningLimits.latestExpiry + 1 + 86340),
        ("999999999999999", 999_999_999_999_999), ("9999999999999999", nil), (max, nil), (min, nil), ("-0", nil),
        ("1e300", nil),
    ] as [(String, Int64?)])
    func timestamps(text: String, epoch: Int64?) {
        #expect(Timestamps.parse(text) == epoch, "timestamp \(text)")
    }

    @Test("iso8601 formats any Int64 without trapping", arguments: [Int64.min, Int64.min + 1, -1, 0, SigningLimits.latestExpiry, Int64.max])
    func iso8601Total(t: Int64) {
        #expect(Timestamps.iso8601(t).hasSuffix("Z"))
    }

    @Test("iso8601 is the inverse of parse around the epoch")
    func iso8601Negative() {
        #expect(Timestamps.iso8601(-1) == "1969-12-31T23:59:59Z")
        #expect(Timestamps.parse(Timestamps.iso8601(-62_167_219_200)) == -62_167_219_200)
    }

    @Test("a verified policy with any epoch is judged without trapping", arguments: [Int64.min, -1, 0, Int64.max])
    func policyEpochs(t: Int64) throws {
        let url = "https://d111111abcdef8.cloudfront.net/a"
        let policy = #"{"Statement":[{"Resource":"\#(url)","Condition":{"DateLessThan":{"AWS:EpochTime":\#(t)},"DateGreaterThan":{"AWS:EpochTime":\#(t)}}}]}"#
        let signed = try SignedRequest.parse(signedURL: url + "?Policy=" + CloudFrontBase64.encode(Array(policy.utf8)) + "&Signature=AAAA&Key-Pair-Id=K1")
        #expect(throws: Refusal.self) { try signed.checkConditions(now: Self.now, viewerIP: nil) }
    }
}

import Testing
import CFSignCore

@Suite("Durations")
struct DurationsTests {
    @Test("seconds or a number with s, m, h, d", arguments: [
        ("3600", 3600), ("0", 0), ("45s", 45), ("90m", 5400), ("12h", 43200), ("30d", 2_592_000), ("365d", 31_536_000),
    ] as [(String, Int64)])
    func parses(text: String, seconds: Int64) {
        #expect(Durations.parse(text) == seconds)
    }

    @Test("anything else is refused", arguments: [
        "", "s", "h", "1.5h", "-5", "+5", "5w", "5 m", " 5", "5m ", "1h30m", "5M", "5H", "0x10", "１",
        "999999999999999999999", "9999999999999999d", "999999999999999d",
    ])
    func refuses(text: String) {
        #expect(Durations.parse(text) == nil)
    }

    @Test("durations are described in readable units", arguments: [
        (2_592_000, "30d"), (5400, "1h30m"), (59, "59s"), (90061, "1d1h1m1s"), (0, "0s"), (-3, "-3s"),
    ] as [(Int64, String)])
    func describe(seconds: Int64, text: String) {
        #expect(Durations.describe(seconds) == text)
    }
}

@Suite("Timestamps")
struct TimestampsTests {
    @Test("epoch seconds and ISO 8601 with Z or an offset", arguments: [
        ("1767225600", 1_767_225_600),
        ("0", 0),
        ("2027-03-01T00:00:00Z", 1_803_859_200),
        ("2027-03-01t00:00:00z", 1_803_859_200),
        ("2027-03-01 00:00:00Z", 1_803_859_200),
        ("2027-03-01T02:00:00+02:00", 1_803_859_200),
        ("2027-02-28T19:30:00-04:30", 1_803_859_200),
        ("2000-02-29T12:34:56Z", 951_827_696),
        ("1970-01-01T00:00:00Z", 0),
        ("1969-12-31T23:59:59Z", -1),
        ("9999-12-31T23:59:59Z", 253_402_300_799),
    ] as [(String, Int64)])
    func parses(text: String, epoch: Int64) {
        #expect(Timestamps.parse(text) == epoch)
    }

    @Test("invalid dates, fractions and other forms are refused", arguments: [
        "", "-5", "2027-02-30T00:00:00Z", "2027-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "2027-04-31T00:00:00Z",
        "2027-13-01T00:00:00Z", "2027-00-01T00:00:00Z", "2027-01-00T00:00:00Z", "2027-01-01T24:00:00Z",
        "2027-01-01T00:60:00Z", "2027-03-01T00:00:00.5Z", "2027-03-01T00:00:00.000+02:00", "2027-03-01T00:00:00",
        "2027-03-01", "2027-03-01T00:00Z", "2027-03-01T00:00:00+0200", "2027-03-01T00:00:00+24:00",
        "2027-03-01T00:00:00+02:60", "2027-03-01T00:00:00 Z", "27-03-01T00:00:00Z", "2027/03/01T00:00:00Z",
        "2027-03-01T00:00:00UTC", "1.5", "tomorrow", "１２３",
    ])
    func refuses(text: String) {
        #expect(Timestamps.parse(text) == nil)
    }

    @Test("iso8601 formats epoch times back", arguments: [
        1_803_859_200, 0, -1, 951_827_696, 253_402_300_799,
    ] as [Int64])
    func formatsBack(epoch: Int64) {
        #expect(Timestamps.parse(Timestamps.iso8601(epoch)) == epoch)
    }

    @Test("iso8601 writes the contract's example form")
    func example() {
        #expect(Timestamps.iso8601(1_803_859_200) == "2027-03-01T00:00:00Z")
    }
}

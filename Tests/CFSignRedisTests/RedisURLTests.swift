import CFSignRedis
import Testing

@Suite("Redis URLs: redis://[user:password@]host:port[/db] and unix:///path[?db=N]")
struct RedisURLTests {
    private func refusal(_ text: String) -> RedisError? {
        #expect(throws: RedisError.self) { try RedisURL(parsing: text) }
    }

    @Test func hostPortAndDatabase() throws {
        let url = try RedisURL(parsing: "redis://redis.internal:6380/4")
        #expect(url.endpoint == .tcp(host: "redis.internal", port: 6380))
        #expect(url.database == 4)
        #expect(url.username == nil)
        #expect(url.password == nil)
    }

    @Test func portDefaultsTo6379AndDatabaseTo0() throws {
        let url = try RedisURL(parsing: "redis://redis.internal")
        #expect(url.endpoint == .tcp(host: "redis.internal", port: 6379))
        #expect(url.database == 0)
        #expect(try RedisURL(parsing: "redis://redis.internal:7000/").database == 0)
    }

    @Test func userAndPasswordArePercentDecoded() throws {
        let url = try RedisURL(parsing: "redis://ali%63e:p%40ss%3Aw%2Fo%25rd@127.0.0.1:6379/1")
        #expect(url.username == "alice")
        #expect(url.password == "p@ss:w/o%rd")
        #expect(url.endpoint == .tcp(host: "127.0.0.1", port: 6379))
        #expect(url.database == 1)
    }

    @Test func passwordWithoutUserUsesTheDefaultUser() throws {
        let url = try RedisURL(parsing: "redis://:s3cret@127.0.0.1:6379")
        #expect(url.username == nil)
        #expect(url.password == "s3cret")
    }

    @Test func bracketedIPv6Host() throws {
        let url = try RedisURL(parsing: "redis://[::1]:6380")
        #expect(url.endpoint == .tcp(host: "::1", port: 6380))
        #expect(try RedisURL(parsing: "redis://[::1]").endpoint == .tcp(host: "::1", port: 6379))
        #expect(url.description == "redis://[::1]:6380")
    }

    @Test func unixSocketWithDatabase() throws {
        let url = try RedisURL(parsing: "unix:///run/redis/redis.sock?db=2")
        #expect(url.endpoint == .unix(path: "/run/redis/redis.sock"))
        #expect(url.database == 2)
        #expect(try RedisURL(parsing: "unix:///run/redis/redis.sock").database == 0)
    }

    @Test func unixSocketWithPassword() throws {
        let url = try RedisURL(parsing: "unix://alice:s3cret@/run/redis/redis.sock")
        #expect(url.endpoint == .unix(path: "/run/redis/redis.sock"))
        #expect(url.username == "alice")
        #expect(url.password == "s3cret")
        #expect(!url.description.contains("s3cret"))
    }

    @Test func tlsIsRefusedBecauseHiredis014HasNoTLS() {
        let error = refusal("rediss://redis.internal:6380")
        #expect(error?.kind == .invalidURL)
        #expect(error?.message.contains("TLS") == true)
        #expect(error?.message.contains("hiredis (0.14)") == true)
    }

    @Test(arguments: ["redis://host:0", "redis://host:65536", "redis://host:port", "redis://host:", "redis://[::1]x", "redis://[::1]:99999"])
    func badPortIsRefused(_ text: String) {
        let error = refusal(text)
        #expect(error?.kind == .invalidURL)
        #expect(error?.message.contains("port") == true)
    }

    @Test(arguments: ["redis://host:6379/x", "redis://host:6379/-1", "redis://host/1.5", "unix:///tmp/r.sock?db=x"])
    func badDatabaseIsRefused(_ text: String) {
        let error = refusal(text)
        #expect(error?.kind == .invalidURL)
        #expect(error?.message.contains("database") == true || error?.message.contains("db=") == true)
    }

    @Test(arguments: ["http://host:6379", "https://host", "host:6379", "redis:/host", ""])
    func otherSchemesAreRefused(_ text: String) {
        let error = refusal(text)
        #expect(error?.kind == .invalidURL)
        #expect(error?.message.contains("redis://") == true, "the message shows the accepted forms")
    }

    @Test func missingPiecesAreRefused() {
        #expect(refusal("redis://")?.message.contains("no host") == true)
        #expect(refusal("redis://:6379")?.message.contains("no host") == true)
        #expect(refusal("unix://relative.sock")?.message.contains("absolute") == true)
        #expect(refusal("redis://[::1:6379")?.message.contains("]") == true)
        #expect(refusal("redis://user:%zz@host")?.message.contains("percent-encoded") == true)
    }

    @Test(arguments: ["redis://user:%+f@host", "redis://user:%-1@host", "redis://user:%2@host", "redis://%ff@host"])
    func aPercentEscapeMustBeTwoHexDigitsOfUTF8(_ text: String) {
        #expect(refusal(text)?.message.contains("percent-encoded") == true)
    }

    @Test func descriptionNeverContainsThePassword() throws {
        let withUser = try RedisURL(parsing: "redis://alice:s3cret@host:6379/2")
        #expect(withUser.description == "redis://alice:***@host:6379/2")
        let withoutUser = try RedisURL(parsing: "redis://:s3cret@host")
        #expect(withoutUser.description == "redis://:***@host:6379")
        let unix = try RedisURL(parsing: "unix://:s3cret@/tmp/r.sock?db=3")
        #expect(unix.description == "unix://:***@/tmp/r.sock?db=3")
        for url in [withUser, withoutUser, unix] {
            #expect(!url.description.contains("s3cret"))
        }
    }

    @Test func refusalMessagesNeverContainThePassword() {
        let error = refusal("redis://alice:s3cret@host:notaport")
        #expect(error != nil)
        #expect(error?.message.contains("s3cret") == false)
        #expect(error?.message.contains("alice:***@host") == true)
    }

    @Test func descriptionParsesBackToTheSameURL() throws {
        for text in ["redis://host:6380/5", "redis://[::1]:6379", "unix:///tmp/r.sock?db=2", "redis://us%20er@host:1", "redis+sentinel://a:1,b:2/m%2Fx/3"] {
            let url = try RedisURL(parsing: text)
            #expect(try RedisURL(parsing: url.description) == url, "\(text)")
        }
    }

    // MARK: Sentinel

    @Test func sentinelURLWithSeveralSentinelsMasterAndDatabase() throws {
        let url = try RedisURL(parsing: "redis+sentinel://s1.internal:26380,10.0.0.2,[::1]:26381/mymaster/3")
        #expect(url.endpoint == .sentinel(nodes: [RedisNode(host: "s1.internal", port: 26380), RedisNode(host: "10.0.0.2", port: 26379),
                                                   RedisNode(host: "::1", port: 26381)], master: "mymaster"))
        #expect(url.database == 3)
        #expect(url.usesSentinel)
        #expect(url.description == "redis+sentinel://s1.internal:26380,10.0.0.2:26379,[::1]:26381/mymaster/3")
    }

    @Test func sentinelURLLoginIsTheMastersAndNeverShown() throws {
        let url = try RedisURL(parsing: "redis+sentinel://cfsign-worker:s3cr%2Fet@127.0.0.1:26379/cfsign%20main")
        #expect(url.username == "cfsign-worker")
        #expect(url.password == "s3cr/et")
        #expect(url.database == 0)
        #expect(url.endpoint == .sentinel(nodes: [RedisNode(host: "127.0.0.1", port: 26379)], master: "cfsign main"))
        #expect(url.description == "redis+sentinel://cfsign-worker:***@127.0.0.1:26379/cfsign%20main")
        #expect(!url.description.contains("s3cr"))
        #expect(try RedisURL(parsing: url.description.replacingOccurrences(of: "***", with: "x")).endpoint == url.endpoint)
        let onlyPassword = try RedisURL(parsing: "redis+sentinel://:pw@h:1/m")
        #expect(onlyPassword.description == "redis+sentinel://:***@h:1/m")
    }

    @Test(arguments: ["redis+sentinel://h:26379", "redis+sentinel://h:26379/", "redis+sentinel://h:26379//2"])
    func sentinelURLWithoutAMasterNameIsRefused(_ text: String) {
        #expect(refusal(text)?.message.contains("master name") == true)
    }

    @Test func badSentinelURLsAreRefusedWithoutShowingThePassword() {
        #expect(refusal("redis+sentinel://h:0/m")?.message.contains("port") == true)
        #expect(refusal("redis+sentinel://h1,,h2/m")?.message.contains("no host") == true)
        #expect(refusal("redis+sentinel://h/m/x")?.message.contains("database") == true)
        #expect(refusal("redis+sentinel://h/m/1/2")?.message.contains("more than") == true)
        let error = refusal("redis+sentinel://alice:s3cret@h:x/m")
        #expect(error?.message.contains("s3cret") == false)
        #expect(error?.message.contains("redis+sentinel://") == true)
    }

    @Test func redirectedKeepsTheLoginAndUsesDatabase0() throws {
        let url = try RedisURL(parsing: "redis://alice:pw@seed:7000/4")
        let moved = url.redirected(to: RedisNode(host: "10.0.0.9", port: 7002))
        #expect(moved.endpoint == .tcp(host: "10.0.0.9", port: 7002))
        #expect(moved.username == "alice")
        #expect(moved.password == "pw")
        #expect(moved.database == 0)
    }
}

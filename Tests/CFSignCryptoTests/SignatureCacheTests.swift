import Testing
import CFSignCore
@testable import CFSignCrypto

@Suite("SignatureCache")
struct SignatureCacheTests {
    func key(_ n: Int, scope: Int64 = 1) -> SignatureCache.Key {
        SignatureCache.Key(scope: scope, keyID: "K", hash: .sha1, policy: Array("policy-\(n)".utf8))
    }

    @Test("a stored signature is found again; a different scope (group version) is a miss")
    func hitAndScope() {
        let cache = SignatureCache(capacity: 4)
        cache.insert([1, 2, 3], for: key(1))
        #expect(cache.signature(for: key(1)) == [1, 2, 3])
        #expect(cache.signature(for: key(1, scope: 2)) == nil)
        #expect(cache.hits.load(ordering: .relaxed) == 1)
        #expect(cache.misses.load(ordering: .relaxed) == 1)
    }

    @Test("the least recently used entry is evicted at capacity")
    func evictsLeastRecentlyUsed() {
        let cache = SignatureCache(capacity: 3)
        for n in 1...3 { cache.insert([UInt8(n)], for: key(n)) }
        _ = cache.signature(for: key(1))  // 1 is now the most recent; 2 the least
        cache.insert([4], for: key(4))
        #expect(cache.signature(for: key(2)) == nil)
        #expect(cache.signature(for: key(1)) == [1])
        #expect(cache.signature(for: key(3)) == [3])
        #expect(cache.signature(for: key(4)) == [4])
        #expect(cache.count == 3)
    }

    @Test("many inserts stay within capacity")
    func bounded() {
        let cache = SignatureCache(capacity: 100)
        for n in 0..<10_000 { cache.insert([UInt8(n % 256)], for: key(n)) }
        #expect(cache.count == 100)
        #expect(cache.signature(for: key(9_999)) == [UInt8(9_999 % 256)])
    }
}

internal import CCFSignOpenSSL

/// The raw OpenSSL calls every other file of this module goes through: memory BIOs and the error
/// queue. Nothing here escapes the module.
enum OpenSSL {
    /// The oldest OpenSSL error on this thread's queue as text, then the queue cleared.
    ///
    /// The queue is per thread: call this right after the failing call.
    static func takeError() -> String {
        let code = ERR_get_error()
        ERR_clear_error()
        guard code != 0 else { return "unknown OpenSSL error" }
        var buffer = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buffer, buffer.count)
        let text = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        return text
    }

    static func clearErrors() { ERR_clear_error() }

    /// A BIO holding a copy of `bytes` (BIO_new_mem_buf would not copy, see interop-facts).
    static func withReadBIO<T>(_ bytes: [UInt8], _ body: (OpaquePointer) throws -> T) rethrows -> T? {
        guard let bio = BIO_new(BIO_s_mem()) else { return nil }
        defer { BIO_free(bio) }
        // BIO_write takes an Int32; a longer input (an inline PEM from Redis) must not trap the conversion.
        guard bytes.count <= Int(Int32.max) else { return nil }
        if !bytes.isEmpty {
            let written = bytes.withUnsafeBytes { BIO_write(bio, $0.baseAddress, Int32($0.count)) }
            guard written == Int32(bytes.count) else { return nil }
        }
        return try body(bio)
    }

    /// Runs `body` with an empty memory BIO and returns what it wrote, or nil if `body` failed.
    static func writeToBIO(_ body: (OpaquePointer) -> Bool) -> [UInt8]? {
        guard let bio = BIO_new(BIO_s_mem()) else { return nil }
        defer { BIO_free(bio) }
        guard body(bio) else { return nil }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { BIO_read(bio, $0.baseAddress, Int32($0.count)) }
            if n <= 0 { break }
            out.append(contentsOf: chunk[0..<Int(n)])
        }
        return out
    }

    /// The library's version text, for start-up logs.
    static var versionText: String { String(cString: OpenSSL_version(Int32(OPENSSL_VERSION))) }
}

/// Refuses encrypted PEM instead of prompting on the terminal (interop-facts: a nil callback blocks).
let refusePassword: @convention(c) (UnsafeMutablePointer<CChar>?, Int32, Int32, UnsafeMutableRawPointer?) -> Int32 = { _, _, _, _ in -1 }

extension Array where Element == UInt8 {
    /// Overwrites the buffer before it is released: used for PEM text of private keys.
    mutating func wipe() {
        withUnsafeMutableBytes { raw in
            guard let base = raw.baseAddress else { return }
            memset_s(base, raw.count)
        }
    }
}

/// A zeroing that the optimiser may not remove (OPENSSL_cleanse).
@inline(never)
func memset_s(_ pointer: UnsafeMutableRawPointer, _ count: Int) {
    OPENSSL_cleanse(pointer, count)
}

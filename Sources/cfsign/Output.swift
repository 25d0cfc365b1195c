import ArgumentParser
import CFSignCore
#if canImport(Glibc)
import Glibc
#endif

/// stdout carries results only; everything else goes to stderr (CLI.md).
enum Terminal {
    static func result(_ text: String) {
        print(text)
    }

    static func info(_ text: String) {
        FileHandleStderr.write(text + "\n")
    }

    /// A refused or failed request: the contract's code where there is one, then a sentence; exit 1.
    static func fail(_ code: ErrorCode?, _ message: String) -> ExitCode {
        if let code {
            FileHandleStderr.write("cfsign: \(code.rawValue): \(message)\n")
        } else {
            FileHandleStderr.write("cfsign: \(message)\n")
        }
        return ExitCode.failure
    }

    static func fail(_ error: SigningError) -> ExitCode { fail(error.code, error.message) }
}

enum FileHandleStderr {
    static func write(_ text: String) {
        var bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress! + offset, $0.count - offset) }
            if n <= 0 { if errno == EINTR { continue }; return }
            offset += n
        }
    }
}

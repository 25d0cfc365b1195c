import ArgumentParser
import CFSignCore
import SystemPackage

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
    /// Best effort: a closed or full stderr loses the text, nothing else.
    static func write(_ text: String) {
        _ = try? FileDescriptor.standardError.writeAll(text.utf8)
    }
}

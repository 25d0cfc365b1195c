import Foundation

/// A fresh private folder under the system temporary directory, removed by `remove()`.
public final class TemporaryDirectory: @unchecked Sendable {
    // @unchecked: `path` never changes after init; `remove()` only touches the file system.
    public let path: String

    /// - Parameter prefix: the start of the folder's name, to tell leftovers apart.
    public init(prefix: String) throws {
        // Short paths: a Unix socket path must fit in 108 bytes.
        let name = "\(prefix)-\(getpid())-\(UUID().uuidString.prefix(8))"
        path = FileManager.default.temporaryDirectory.appendingPathComponent(name).path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    }

    /// The path of `name` inside the folder.
    public func file(_ name: String) -> String { path + "/" + name }

    /// The contents of a file in the folder as text ("" if it cannot be read).
    public func text(_ name: String) -> String {
        (try? String(contentsOfFile: file(name), encoding: .utf8)) ?? ""
    }

    public func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// Something went wrong while setting up a test's processes or files.
public struct TestSupportError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Runs a short command line tool to completion; throws with its output if it fails.
@discardableResult
public func runTool(_ executable: String, _ arguments: [String]) throws -> String {
    // The output goes to a file the child opens itself: a pipe's write end could leak into a
    // child another test spawns at the same moment and hold our read open until that one exits.
    let directory = try TemporaryDirectory(prefix: "cfsign-tool")
    defer { directory.remove() }
    let child = try ChildProcess(executable, arguments, output: .file(directory.file("output")))
    let status = child.wait()
    guard status == 0 else {
        throw TestSupportError("\(executable) \(arguments.joined(separator: " ")) exited \(status): \(directory.text("output"))")
    }
    return directory.text("output")
}

/// A loopback TCP port nobody listens on right now: bind port 0, read what the kernel chose, close.
public func freeLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw TestSupportError("socket() failed: errno \(errno)") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0 else { throw TestSupportError("bind() failed: errno \(errno)") }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let named = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    guard named == 0 else { throw TestSupportError("getsockname() failed: errno \(errno)") }
    return Int(UInt16(bigEndian: address.sin_port))
}

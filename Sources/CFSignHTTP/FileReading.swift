import SystemPackage

/// Reading served files, in one place for the HTTP server and the edge: swift-system's
/// `FileDescriptor` retries interrupted calls, and these helpers retry short reads.
extension FileDescriptor {
    /// Opens `path` read-only (close-on-exec); nil when it cannot be opened.
    package static func openForReading(_ path: String) -> FileDescriptor? {
        try? FileDescriptor.open(FilePath(path), .readOnly, options: [.closeOnExec])
    }

    /// `count` bytes from `offset` (pread: the descriptor's own offset is left alone), fewer only
    /// when the file ends first (it shrank meanwhile); nil on a read error.
    package func bytes(at offset: Int64, count: Int) -> [UInt8]? {
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n: Int
            do {
                n = try bytes.withUnsafeMutableBytes { buffer in
                    try read(fromAbsoluteOffset: offset + Int64(done), into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]))
                }
            } catch {
                return nil
            }
            if n == 0 { return Array(bytes[..<done]) }
            done += n
        }
        return bytes
    }
}

import CFSignSync
import Foundation

/// A child process of a test: started with `posix_spawn`, reaped with `waitpid`, its output in a file.
///
/// Not Foundation's `Process`: on Linux it learns that a child exited through a socket the child
/// inherits, so a child another test spawns at the same moment can inherit that socket too, and
/// `waitUntilExit()`/`isRunning` then wait for that other child as well. Under `swift test`'s
/// parallel suites this hung a CI run for an hour. `waitpid` on the child's own pid cannot be
/// held up by anyone else. Not swift-subprocess either: its processes live inside one async
/// closure, and these fixtures start in one call and stop in another, from synchronous code.
public final class ChildProcess: @unchecked Sendable {
    // @unchecked: `pid` never changes; the exit status is behind `reaped`.
    public let pid: pid_t
    /// The raw `waitpid` status once reaped; the lock also keeps two threads from reaping at once.
    private let reaped = Locked<Int32?>(nil)

    /// Where the child's standard output and error go.
    public enum Output: Sendable {
        case discard
        /// Both streams, appended to this file (created mode 0600 if missing).
        case file(String)
    }

    /// Starts `executable` with `arguments`; standard input is /dev/null.
    /// - Parameter environment: the child's whole environment (default: this process's).
    public init(_ executable: String, _ arguments: [String], environment: [String: String]? = nil,
                output: Output = .discard) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        switch output {
        case .discard: posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        case .file(let path): posix_spawn_file_actions_addopen(&actions, 1, path, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        }
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // The test process's sockets and files stay out of the child (a Redis connection a test
        // closes must close), as Foundation's `Process` does.
        if let closeFrom = Self.addCloseFrom { _ = closeFrom(&actions, 3) }

        // Signals as a fresh process has them: a test that ignores SIGTERM (a ServiceGroup's
        // signal handling does) must not pass that on to the worker it starts.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigdefault(&attributes, &all)
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { $0.map { strdup("\($0.key)=\($0.value)") } + [nil] }
        defer { (argv + (envp ?? [])).forEach { free($0) } }
        var pid: pid_t = 0
        // No environment given: `environ` itself, so a `setenv` made by a test's set-up is passed on.
        let result = envp.map { posix_spawn(&pid, executable, &actions, &attributes, argv, $0) }
            ?? posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        guard result == 0 else {
            throw TestSupportError("cannot run \(executable): \(String(cString: strerror(result)))")
        }
        self.pid = pid
    }

    /// `posix_spawn_file_actions_addclosefrom_np` (glibc 2.34+), looked up at run time: Swift's
    /// Glibc module is imported without `_GNU_SOURCE`, which hides its declaration.
    private static let addCloseFrom: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32)? = {
        guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "posix_spawn_file_actions_addclosefrom_np") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)
    }()

    /// True until the child has exited (reaping it when it has).
    public var isRunning: Bool { status() == nil }

    /// The exit code, or the number of the signal that ended it; nil while it runs.
    public var terminationStatus: Int32? {
        status().map { ($0 & 0x7f) == 0 ? ($0 >> 8) & 0xff : $0 & 0x7f }
    }

    /// Blocks until the child has exited; returns `terminationStatus`.
    @discardableResult
    public func wait() -> Int32 {
        while true {
            if let code = terminationStatus { return code }
            usleep(5_000)
        }
    }

    /// Sends `signal` if the child has not been reaped (after that its pid may belong to another process).
    public func signal(_ signal: Int32) {
        reaped.withLock { status in if status == nil { _ = kill(pid, signal) } }
    }

    /// `signal` first, SIGKILL if it has not exited within `grace` seconds; then waits for it.
    public func stop(signal: Int32, grace: Double) {
        guard isRunning else { return }
        self.signal(signal)
        let deadline = Date().addingTimeInterval(grace)
        while isRunning, Date() < deadline { usleep(10_000) }
        if isRunning { self.signal(SIGKILL) }
        wait()
    }

    private func status() -> Int32? {
        reaped.withLock { status in
            if status == nil {
                var raw: Int32 = 0
                if waitpid(pid, &raw, WNOHANG) == pid { status = raw }
            }
            return status
        }
    }
}

import Foundation

/// Starts a thread under a name the OS shows (`top -H`, `perf report --sort comm`,
/// `/proc/PID/task/*/comm`), so an operator can tell the take, sign, reply and span threads apart.
///
/// Foundation's `Thread.name` set before `start()` names only the `Thread` object: on Linux it
/// reaches the kernel only when set on the running thread, which is what this does. The kernel
/// keeps 15 bytes of it; the names given here fit.
public enum NamedThread {
    public static func start(_ name: String, _ body: @escaping @Sendable () -> Void) {
        let thread = Thread {
            Thread.current.name = name
            body()
        }
        thread.name = name
        thread.start()
    }
}

import Foundation
import Glibc

/// Starts a thread under a name the OS shows (`top -H`, `perf report --sort comm`,
/// `/proc/PID/task/*/comm`), so an operator can tell the take, sign, reply and span threads apart.
///
/// The running thread writes its own name to `/proc/thread-self/comm` (what `pthread_setname_np`
/// does on Linux; that call is not visible to Swift without `_GNU_SOURCE`). Foundation's
/// `Thread.name` is not used: set before `start()` it never reaches the kernel, and set from the
/// new thread it can land on the thread that started it (seen under ThreadSanitizer: two threads
/// named `cfsign-main`, none `cfsign-sign`). The kernel keeps 15 bytes.
public enum NamedThread {
    public static func start(_ name: String, _ body: @escaping @Sendable () -> Void) {
        let shown = String(decoding: name.utf8.prefix(15), as: UTF8.self)
        let thread = Thread {
            let fd = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
            if fd >= 0 {
                _ = shown.withCString { write(fd, $0, strlen($0)) }
                close(fd)
            }
            body()
        }
        thread.start()
    }
}

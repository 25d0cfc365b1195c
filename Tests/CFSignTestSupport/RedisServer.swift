import CFSignRedis
import Foundation

/// A throwaway `redis-server` for one test: loopback only, no persistence, its own folder.
///
/// ```swift
/// let server = try RedisServer.start()
/// defer { server.stop() }
/// let connection = try server.connect()
/// ```
public final class RedisServer: @unchecked Sendable {
    // @unchecked: every stored property is set in init and never changes; `ChildProcess` is
    // signalled and reaped under its own lock.
    public static let executable = "/usr/bin/redis-server"

    /// Where to reach it (a TCP loopback port, or a Unix socket).
    public let url: RedisURL
    /// The TCP port, or nil for a Unix-socket-only server.
    public let port: Int?
    public let directory: TemporaryDirectory
    private let process: ChildProcess

    private init(url: RedisURL, port: Int?, directory: TemporaryDirectory, process: ChildProcess) {
        self.url = url
        self.port = port
        self.directory = directory
        self.process = process
    }

    deinit { stop() }

    public var pid: Int32 { process.pid }
    public var isRunning: Bool { process.isRunning }

    /// The server's own log (stdout and stderr), for failure messages.
    public var log: String { directory.text("redis.log") }

    /// `redis-server --port P --bind 127.0.0.1 --save '' --appendonly no --dir <tmp> <extraArguments>`
    /// on a free loopback port; returns once it answers PING (any reply, even NOAUTH).
    public static func start(extraArguments: [String] = []) throws -> RedisServer {
        var lastError: Error = TestSupportError("redis-server did not start")
        // Another process may take the free port between our probe and redis-server's bind: retry.
        for _ in 0..<5 {
            let port = try freeLoopbackPort()
            let directory = try TemporaryDirectory(prefix: "cfsign-redis")
            let arguments = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", directory.path] + extraArguments
            do {
                return try launch(arguments, url: RedisURL(endpoint: .tcp(host: "127.0.0.1", port: port)), port: port, directory: directory)
            } catch {
                lastError = error
            }
        }
        throw lastError
    }

    /// The same server listening only on a Unix socket (`--port 0 --unixsocket <tmp>/redis.sock
    /// --unixsocketperm 700`); `url` is `unix://<tmp>/redis.sock`.
    public static func startUnixSocket(extraArguments: [String] = []) throws -> RedisServer {
        let directory = try TemporaryDirectory(prefix: "cfsign-redis")
        let socket = directory.file("redis.sock")
        let arguments = ["--port", "0", "--unixsocket", socket, "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
                         "--dir", directory.path] + extraArguments
        return try launch(arguments, url: RedisURL(endpoint: .unix(path: socket)), port: nil, directory: directory)
    }

    /// A Sentinel (`redis-server <conf> --sentinel`, no redis-sentinel package needed) on a free
    /// loopback port, monitoring `master` under `name` with quorum 1; `url` is the Sentinel's own
    /// `redis://` address.
    public static func startSentinel(monitoring master: RedisServer, name: String) throws -> RedisServer {
        guard let masterPort = master.port else { throw TestSupportError("a Sentinel needs a TCP master") }
        let port = try freeLoopbackPort()
        let directory = try TemporaryDirectory(prefix: "cfsign-sentinel")
        let conf = directory.file("sentinel.conf")
        let text = "port \(port)\nbind 127.0.0.1\ndir \(directory.path)\nsentinel monitor \(name) 127.0.0.1 \(masterPort) 1\n"
        guard FileManager.default.createFile(atPath: conf, contents: Data(text.utf8)) else { throw TestSupportError("cannot write \(conf)") }
        return try launch([conf, "--sentinel"], url: RedisURL(endpoint: .tcp(host: "127.0.0.1", port: port)), port: port, directory: directory)
    }

    private static func launch(_ arguments: [String], url: RedisURL, port: Int?, directory: TemporaryDirectory) throws -> RedisServer {
        let process: ChildProcess
        do {
            process = try ChildProcess(executable, arguments, output: .file(directory.file("redis.log")))
        } catch {
            directory.remove()
            throw error
        }
        let server = RedisServer(url: url, port: port, directory: directory, process: process)
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            guard process.isRunning else {
                let text = server.log
                server.stop()
                throw TestSupportError("redis-server \(arguments.joined(separator: " ")) exited at start:\n\(text)")
            }
            if let connection = try? RedisConnection(url: url, connectTimeout: 0.5, commandTimeout: 2),
               (try? connection.command(["PING"])) != nil {
                return server
            }
            usleep(20_000)
        }
        let text = server.log
        server.stop()
        throw TestSupportError("redis-server did not answer PING within 10 s:\n\(text)")
    }

    /// A new connection to this server (with `username`/`password`/`database` if given).
    public func connect(username: String? = nil, password: String? = nil, database: Int = 0,
                        commandTimeout: Double = 5) throws(RedisError) -> RedisConnection {
        var url = self.url
        url.username = username
        url.password = password
        url.database = database
        return try RedisConnection(url: url, connectTimeout: 2, commandTimeout: commandTimeout)
    }

    /// Kills the server (SIGKILL: a crash, no goodbye) and waits for it, keeping its folder.
    public func kill() {
        process.stop(signal: SIGKILL, grace: 0)
    }

    /// Kills the server, waits for it to exit, and removes its folder. Safe to call twice.
    public func stop() {
        process.stop(signal: SIGKILL, grace: 0)
        directory.remove()
    }
}

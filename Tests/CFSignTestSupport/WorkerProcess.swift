import CFSignRedis
import Foundation

/// Private keys made for one test with `openssl genpkey`, in their own folder, files mode 0600 named
/// `test-only-<id>.pem`, and the key-group JSON that names them.
public final class TestKeys: @unchecked Sendable {
    // @unchecked: set in init, never changed.
    public let directory: TemporaryDirectory
    public let ids: [String]

    /// One RSA-2048 key per id.
    public init(ids: [String]) throws {
        directory = try TemporaryDirectory(prefix: "cfsign-keys")
        self.ids = ids
        do {
            for id in ids {
                let path = file(id)
                try runTool("/usr/bin/openssl", ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path])
                guard chmod(path, 0o600) == 0 else { throw TestSupportError("chmod 0600 \(path) failed: errno \(errno)") }
            }
        } catch {
            directory.remove()
            throw error
        }
    }

    /// The key file of `id`.
    public func file(_ id: String) -> String { directory.file("test-only-\(id).pem") }

    /// `{"version":V,"active":A,"keys":[{"id":...,"private_key_file":...},...]}` for every key.
    public func keyGroupJSON(version: Int = 1, active: String? = nil) -> String {
        let keys = ids.map { #"{"id":"\#($0)","private_key_file":"\#(file($0))"}"# }.joined(separator: ",")
        return #"{"version":\#(version),"active":"\#(active ?? ids[0])","keys":[\#(keys)]}"#
    }

    public func remove() { directory.remove() }
}

/// The built `cfsign` binary run as `cfsign worker --redis URL --namespace NS --allow-inline-keys`,
/// with short heartbeat, poll and block intervals so tests run quickly. Logs go to a file.
public final class WorkerProcess: @unchecked Sendable {
    // @unchecked: set in init, never changed; `ChildProcess` is signalled and reaped under its own lock.
    public let namespace: String
    public let directory: TemporaryDirectory
    private let process: ChildProcess

    /// `$CFSIGN_BIN`, else `<package root>/.build/debug/cfsign`.
    public static var binary: String {
        if let path = ProcessInfo.processInfo.environment["CFSIGN_BIN"], !path.isEmpty { return path }
        // This file is <root>/Tests/CFSignTestSupport/WorkerProcess.swift.
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return root.appendingPathComponent(".build/debug/cfsign").path
    }

    /// The settings every test worker runs with (CFSIGN_* environment variables).
    public static let environment: [String: String] = [
        "CFSIGN_HEARTBEAT_INTERVAL": "0.5",
        "CFSIGN_HEARTBEAT_TTL": "1.5",
        "CFSIGN_KEYGROUP_POLL_INTERVAL": "0.5",
        "CFSIGN_BLOCK_TIMEOUT": "0.5",
    ]

    private init(namespace: String, directory: TemporaryDirectory, process: ChildProcess) {
        self.namespace = namespace
        self.directory = directory
        self.process = process
    }

    deinit { stop() }

    public var isRunning: Bool { process.isRunning }
    public var pid: Int32 { process.pid }
    /// What the worker logged (stderr).
    public var log: String { directory.text("worker.log") }

    /// Starts a worker on `redis`/`namespace`; returns once it has registered in `{NS}:workers`.
    public static func start(redis: RedisURL, namespace: String, extraArguments: [String] = [],
                             extraEnvironment: [String: String] = [:]) throws -> WorkerProcess {
        let binary = self.binary
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw TestSupportError("no cfsign binary at \(binary): run `swift build --build-tests` first, or set CFSIGN_BIN")
        }
        let directory = try TemporaryDirectory(prefix: "cfsign-worker")
        // Settings come only from this test: drop any CFSIGN_* of the environment the tests run in.
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("CFSIGN_") }
        environment.merge(Self.environment) { _, new in new }
        environment.merge(extraEnvironment) { _, new in new }
        let arguments = ["worker", "--redis", redisURLText(redis), "--namespace", namespace, "--allow-inline-keys"] + extraArguments
        let process: ChildProcess
        do {
            process = try ChildProcess(binary, arguments, environment: environment, output: .file(directory.file("worker.log")))
        } catch {
            directory.remove()
            throw error
        }
        let worker = WorkerProcess(namespace: namespace, directory: directory, process: process)
        do {
            try worker.waitUntilRegistered(redis: redis)
        } catch {
            worker.stop()
            throw error
        }
        return worker
    }

    /// Waits until `{NS}:workers` has a member (the worker registers before it takes a job).
    private func waitUntilRegistered(redis: RedisURL, timeout: Double = 10) throws {
        let connection = try RedisConnection(url: redis, connectTimeout: 2, commandTimeout: 5)
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            guard process.isRunning else {
                throw TestSupportError("cfsign worker exited (status \(process.terminationStatus ?? -1)) before registering:\n\(log)")
            }
            if let n = try connection.command(["SCARD", "{\(namespace)}:workers"]).integer, n > 0 { return }
            usleep(20_000)
        }
        throw TestSupportError("cfsign worker did not register within \(timeout) s:\n\(log)")
    }

    /// SIGTERM (drain and exit), SIGKILL after 5 s; waits for the exit and removes the log folder.
    public func stop() {
        process.stop(signal: SIGTERM, grace: 5)
        directory.remove()
    }

    /// The URL as `--redis` takes it (with the password: `description` hides it).
    static func redisURLText(_ url: RedisURL) -> String {
        var auth = ""
        if url.username != nil || url.password != nil {
            func encoded(_ s: String) -> String { s.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? s }
            auth = (url.username.map(encoded) ?? "") + (url.password.map { ":" + encoded($0) } ?? "") + "@"
        }
        switch url.endpoint {
        case .tcp(let host, let port):
            let h = host.contains(":") ? "[\(host)]" : host
            return "redis://\(auth)\(h):\(port)/\(url.database)"
        case .unix(let path):
            return "unix://\(auth)\(path)?db=\(url.database)"
        case .sentinel(let nodes, let master):
            return "redis+sentinel://\(auth)" + nodes.map(\.description).joined(separator: ",") + "/"
                + (master.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? master) + "/\(url.database)"
        }
    }
}

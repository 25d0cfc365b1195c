import ArgumentParser
import CFSignAdmin
import CFSignCore
import CFSignRedis
import Foundation

/// `--redis URL` and `--namespace NS` with the `CFSIGN_REDIS` / `CFSIGN_NAMESPACE` fallbacks (CLI.md).
struct RedisOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Redis URL (default $CFSIGN_REDIS, else redis://127.0.0.1:6379).", valueName: "url"))
    var redis: String?

    @Option(help: ArgumentHelp("Namespace (default $CFSIGN_NAMESPACE, else cfsign).", valueName: "ns"))
    var namespace: String?

    var redisURL: RedisURL {
        get throws {
            let text = redis ?? ProcessInfo.processInfo.environment["CFSIGN_REDIS"] ?? "redis://127.0.0.1:6379"
            do { return try RedisURL(parsing: text) } catch { throw ValidationError(error.message) }
        }
    }

    var ns: Namespace {
        get throws {
            let text = namespace ?? ProcessInfo.processInfo.environment["CFSIGN_NAMESPACE"] ?? "cfsign"
            do { return try Namespace(text) } catch { throw ValidationError(error.description) }
        }
    }

    /// A connection, or exit 1 with a sentence saying what to check. On Redis Cluster it is on the
    /// node that owns the namespace's slot, so any node of the cluster will do as `--redis`.
    func connect(commandTimeout: Double = 10) throws -> RedisConnection {
        let url = try redisURL
        let ns = try self.ns
        do {
            return try FleetConnection.open(url, namespace: ns, connectTimeout: 5, commandTimeout: commandTimeout)
        } catch {
            throw Terminal.fail(nil, Self.explain(error.message))
        }
    }

    /// A failed connection's message with what to check: a refused login is a wrong user or
    /// password in the URL, not a Redis that is down, so it must not say "is Redis running?".
    static func explain(_ message: String) -> String {
        let login = ["refused the login", "WRONGPASS", "NOAUTH", "invalid password", "invalid username-password"]
        if login.contains(where: { message.contains($0) }) {
            let said = message.hasSuffix(".") ? String(message.dropLast()) : message
            return "\(said): authentication failed; check the user and password in the Redis URL (redis://[user]:password@host:port, given with --redis or CFSIGN_REDIS)"
        }
        return "\(message) (is Redis running? set --redis or CFSIGN_REDIS)"
    }
}

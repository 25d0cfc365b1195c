import ArgumentParser
import CFSignClient
import CFSignCore
import Foundation

struct Request: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask the fleet to sign one link: enqueue a job on Redis, wait for its reply, print it.",
        discussion: """
            Plain output is exactly what `cfsign sign` prints for the same link; --json prints the \
            reply object. --key-id is the job's key_id (a non-active key of the key group). Exit 1 \
            on an error reply (its code on stderr) or when no worker answers within --timeout.

            Examples:
              cfsign request https://d111111abcdef8.cloudfront.net/invoices/42.pdf \\
                --expires-in 1h --redis redis://127.0.0.1:6379
              cfsign request https://d111111abcdef8.cloudfront.net/reports/q3.pdf \\
                --expires-in 10m --cookies --json
            """
    )

    @OptionGroup var policy: PolicyOptions
    @OptionGroup var redis: RedisOptions

    @Option(help: ArgumentHelp("Sign with this key of the current key group instead of the active one.", valueName: "id"))
    var keyId: String?

    @Option(help: ArgumentHelp("Seconds to wait for a worker's reply.", valueName: "s"))
    var timeout: Double = 10

    func validate() throws {
        guard timeout > 0, timeout <= 3600 else { throw ValidationError("--timeout must be between 0 and 3600 seconds") }
    }

    func run() async throws {
        let request: SignRequest
        do { request = SignRequest(try policy.request(keyID: keyId)) } catch { throw Terminal.fail(error) }
        let client: CFSignClient
        do {
            client = try CFSignClient(configuration: .init(redis: try redis.redisURL, namespace: try redis.ns))
        } catch {
            throw Terminal.fail(nil, RedisOptions.explain("\(error)"))
        }
        defer { client.close() }
        do {
            let reply = try await client.sign(request, timeout: .milliseconds(Int64(timeout * 1000)))
            if policy.json {
                Terminal.result(reply.replyJSON)
            } else {
                Terminal.result(reply.plainText)
            }
        } catch {
            throw Terminal.fail(error.code, error.message)
        }
    }
}

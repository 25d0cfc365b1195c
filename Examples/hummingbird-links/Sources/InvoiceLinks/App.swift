import CFSignClient
import CFSignCore
import Foundation
import Hummingbird
import Logging

/// `GET /invoices/:id/link` answers `{"url": "<signed link>", "expires_at": <epoch s>}` for
/// invoice `id` (digits only), signed by the fleet for an hour. The CFSignClient runs as a service
/// of the app, so a graceful shutdown (SIGTERM) lets the calls in flight finish first.
///
/// Settings (environment): `CFSIGN_REDIS` (default redis://127.0.0.1:6379), `CFSIGN_NAMESPACE`
/// (default cfsign), `DISTRIBUTION` (default https://d111111abcdef8.cloudfront.net), `PORT`
/// (default 8080; the app listens on 127.0.0.1).
@main
struct InvoiceLinks {
    static func main() async throws {
        let env = ProcessInfo.processInfo.environment
        let logger = Logger(label: "invoice-links")
        let client = try CFSignClient(redis: env["CFSIGN_REDIS"] ?? "redis://127.0.0.1:6379", namespace: env["CFSIGN_NAMESPACE"] ?? "cfsign")
        let distribution = env["DISTRIBUTION"] ?? "https://d111111abcdef8.cloudfront.net"
        let router = Router()
        router.get("/invoices/:id/link") { _, context -> Response in
            let id = try context.parameters.require("id")
            guard !id.isEmpty, id.count <= 20, id.allSatisfy({ $0.isASCII && $0.isNumber }) else {
                throw HTTPError(.badRequest, message: "an invoice id is 1-20 digits")
            }
            let link: SignedReply
            do throws(CFSignClientError) {
                link = try await client.sign(url: "\(distribution)/invoices/\(id).pdf", expiresIn: 3600, timeout: .seconds(5))
            } catch {
                // The fleet refused or did not answer: say so without leaking anything but the code.
                throw HTTPError(.serviceUnavailable, message: "no signed link: \(error.code?.rawValue ?? "fleet unavailable")")
            }
            let body = #"{"url":"\#(link.url ?? "")","expires_at":\#(link.expiresAt)}"#
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: body)))
        }
        let app = Application(
            router: router,
            configuration: .init(address: .hostname("127.0.0.1", port: Int(env["PORT"] ?? "8080") ?? 8080)),
            services: [CFSignClientService(client: client)],
            logger: logger)
        try await app.runService()
    }
}

import ServiceLifecycle

/// Runs a `CFSignClient` in an app's `ServiceGroup` (Hummingbird, Vapor or your own): the client
/// works as soon as it is made; on graceful shutdown the service waits for the calls in flight to
/// be answered (at most the client's `defaultTimeout`), then closes the client.
///
/// ```swift
/// let client = try CFSignClient(redis: "redis://127.0.0.1:6379", namespace: "cfsign")
/// let group = ServiceGroup(services: [app, CFSignClientService(client: client)], logger: logger)
/// ```
public struct CFSignClientService: Service {
    public let client: CFSignClient

    public init(client: CFSignClient) { self.client = client }

    public func run() async throws {
        // Returns on graceful shutdown; throws on cancellation, when there is nothing to drain for.
        do { try await gracefulShutdown() } catch { client.close(); return }
        await client.drain(timeout: client.configuration.defaultTimeout)
        client.close()
    }
}

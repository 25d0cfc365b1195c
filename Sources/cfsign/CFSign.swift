import ArgumentParser

@main
struct CFSign: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cfsign",
        abstract: "Signs private CloudFront links (signed URLs and signed cookies) for apps, from a Redis queue or locally.",
        discussion: """
            Producers push signing jobs onto Redis; `cfsign worker` processes sign them with the key group
            stored in Redis and answer on each job's reply list. `cfsign sign` signs one link locally.
            stdout carries only results; logs and errors go to stderr. Exit 0: done; 1: refused or failed.
            """,
        version: CFSignVersion.text,
        subcommands: [Sign.self, SignBatch.self, Keys.self, Worker.self, KeyGroupCommand.self, Status.self, Request.self, Verify.self, Edge.self]
    )
}

enum CFSignVersion {
    static let text = "cfsign 0.1.0 (protocol 1)"
}

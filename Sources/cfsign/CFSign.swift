import ArgumentParser

@main
struct CFSign: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cfsign",
        abstract: "Signs private CloudFront links (signed URLs and signed cookies) for apps, from a Redis queue or locally.",
        // One line per paragraph (a `\` at a line's end joins it to the next): the argument
        // parser wraps each paragraph once to the terminal; examples stay under 78 columns.
        discussion: """
            Producers push signing jobs onto Redis; `cfsign worker` processes sign them with the key \
            group stored in Redis and answer on each job's reply list. `cfsign sign` signs one link \
            locally, with no Redis.

            stdout carries only results; logs and errors go to stderr. Exit status: 0 done; 1 refused \
            or failed (the reason on stderr); 64 usage error (an unknown flag, a missing or bad value).

            Examples:
              cfsign keys generate --type ec --out keys --name my-first-key
              cfsign sign https://d111111abcdef8.cloudfront.net/invoices/42.pdf \\
                --key-id K2JCJMDEHXQW5F --private-key keys/my-first-key.pem \\
                --expires-in 1h
              cfsign help worker
            """,
        version: CFSignVersion.text,
        subcommands: [Sign.self, SignBatch.self, Keys.self, Worker.self, KeyGroupCommand.self, Status.self, Request.self, Verify.self, Edge.self, KMSRequest.self]
    )
}

enum CFSignVersion {
    static let text = "cfsign 0.1.0 (protocol 1)"
}

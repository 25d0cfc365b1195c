import ArgumentParser
import CFSignAdmin
import CFSignCore
import Foundation

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The fleet at a glance: workers, versions, queue depth, in-flight jobs, dead list.",
        usage: "cfsign status [--json] [--watch] [--interval <s>] [<options>]",
        discussion: """
            Exit 0 when at least one worker is live, every live worker signs with the stored \
            key-group version, and none reports a refusal; 1 otherwise, with the reason on stderr. \
            With --watch it keeps running.

            Examples:
              cfsign status
              cfsign status --watch --interval 1
              cfsign status --json --redis redis://127.0.0.1:6379
            """
    )

    @OptionGroup var redis: RedisOptions
    @Flag(help: "Print one JSON object.") var json = false
    @Flag(help: "Refresh every --interval seconds until interrupted.") var watch = false
    @Option(help: ArgumentHelp("Seconds between refreshes with --watch.", valueName: "s")) var interval: Double = 2

    func run() throws {
        let ns = try redis.ns
        let connection = try redis.connect()
        while true {
            let fleet: FleetSnapshot
            do { fleet = try FleetSnapshot.read(connection, ns) } catch { throw Terminal.fail(nil, "reading the fleet: \(error.message)") }
            let text = json ? Self.json(fleet, ns) : Self.table(fleet, ns)
            if watch && !json && isatty(1) == 1 { print("\u{1B}[H\u{1B}[2J", terminator: "") }
            Terminal.result(text)
            if !watch {
                if let problem = fleet.problem { throw Terminal.fail(nil, problem.message(ns)) }
                return
            }
            fflush(nil)
            Thread.sleep(forTimeInterval: max(0.2, interval))
        }
    }

    static func table(_ fleet: FleetSnapshot, _ ns: Namespace) -> String {
        var lines: [String] = []
        let versions = fleet.versions
        let agreement: String
        if fleet.live.isEmpty { agreement = "no live worker" }
        else if versions.count == 1 { agreement = "all on key-group version \(versions.first!.map(String.init) ?? "none")" }
        else { agreement = "MIXED key-group versions: \(versions.map { $0.map(String.init) ?? "none" }.sorted().joined(separator: ", "))" }
        lines.append("namespace \(ns): \(fleet.live.count) live worker(s), \(agreement)")
        lines.append("queue \(fleet.queued)  in-flight \(fleet.inflightTotal)  dead \(fleet.dead)")
        if !fleet.workers.isEmpty {
            lines.append(row(["WORKER", "HOST", "VERSION", "JOBS", "ERRORS", "INFLIGHT", "LAST SEEN", "STATE"]))
        }
        for w in fleet.workers {
            let seen: String
            if let s = w.heartbeat?.seenAt, fleet.redisTimeMilliseconds > 0,
               case let (ago, overflow) = fleet.redisTimeMilliseconds.subtractingReportingOverflow(s), !overflow {
                seen = String(format: "%.1fs ago", Double(ago) / 1000)
            } else { seen = "-" }
            let state = w.heartbeat == nil ? "DEAD (heartbeat expired; a live worker requeues its jobs)" : (w.heartbeat?.state ?? "?")
            lines.append(row([w.id, w.heartbeat?.host ?? "-", w.keyGroupVersion.map(String.init) ?? "none",
                              w.heartbeat?.jobs.map(String.init) ?? "-", w.heartbeat?.errors.map(String.init) ?? "-",
                              String(w.inflight), seen, state]))
            if let r = w.refusal {
                lines.append("    refused key group version \(r.version.map(String.init) ?? "?"): \(r.reason)")
            }
            if let e = w.heartbeat?.lastError { lines.append("    last error: \(e)") }
        }
        return lines.joined(separator: "\n")
    }

    /// One table row: fixed-width columns, the last one free.
    static func row(_ cells: [String]) -> String {
        let widths = [34, 14, 7, 9, 7, 8, 10]
        var line = ""
        for (i, cell) in cells.enumerated() {
            if i < widths.count {
                line += cell.padding(toLength: max(widths[i], cell.count), withPad: " ", startingAt: 0) + " "
            } else {
                line += cell
            }
        }
        return line
    }

    static func json(_ fleet: FleetSnapshot, _ ns: Namespace) -> String {
        var w = JSONWriter()
        w.beginObject()
        w.field("queue", fleet.queued)
        w.field("dead", fleet.dead)
        w.field("inflight", fleet.inflightTotal)
        w.field("live_workers", fleet.live.count)
        w.key("versions")
        w.beginArray()
        for v in fleet.versions.sorted(by: { ($0 ?? -1) < ($1 ?? -1) }) { if let v { w.value(v) } else { w.null() } }
        w.endArray()
        w.field("agreed", !fleet.live.isEmpty && fleet.versions.count == 1)
        // What the exit code says: the fleet signs with the stored group (CLI.md), and if not, why.
        let problem = fleet.problem?.message(ns)
        w.field("ok", problem == nil)
        w.key("problem")
        if let problem { w.value(problem) } else { w.null() }
        w.key("workers")
        w.beginArray()
        for worker in fleet.workers {
            w.beginObject()
            w.field("id", worker.id)
            w.field("live", worker.isLive)
            w.field("inflight", worker.inflight)
            w.key("heartbeat")
            w.value(worker.document ?? .null)
            w.endObject()
        }
        w.endArray()
        w.endObject()
        return w.string
    }
}

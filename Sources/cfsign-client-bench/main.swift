import CFSignClient
import CFSignCore
import CFSignRedis
import Foundation

/// The producer side of scripts/bench-producer: `calls` sign calls through one CFSignClient with
/// `concurrency` of them in flight at once (each of `concurrency` tasks calls in a loop), over a
/// pool of `urls` URLs with one fixed expiry, so a warmed worker answers from its signature cache
/// and the producer path is what is measured. Prints one JSON line:
/// {"concurrency":C,"calls":N,"ok":K,"seconds":S,"requests_per_s":R,"p50_ms":..,"p99_ms":..}.
///
/// Usage: cfsign-client-bench REDIS_URL NAMESPACE CONCURRENCY CALLS URLS EXPIRES_AT
let arguments = CommandLine.arguments
guard arguments.count == 7, let concurrency = Int(arguments[3]), let calls = Int(arguments[4]), let urls = Int(arguments[5]),
      let expiresAt = Int64(arguments[6]), concurrency > 0, calls >= concurrency, urls > 0 else {
    FileHandle.standardError.write(Data("usage: cfsign-client-bench REDIS_URL NAMESPACE CONCURRENCY CALLS URLS EXPIRES_AT\n".utf8))
    exit(64)
}
let client = try CFSignClient(configuration: .init(redis: try RedisURL(parsing: arguments[1]), namespace: try Namespace(arguments[2]),
                                                   defaultTimeout: .seconds(60)))
let perTask = calls / concurrency
let start = ContinuousClock.now
let latencies: [Double] = await withTaskGroup(of: [Double].self) { group in
    for t in 0..<concurrency {
        group.addTask {
            var mine: [Double] = []
            mine.reserveCapacity(perTask)
            for i in 0..<perTask {
                let url = "https://d111111abcdef8.cloudfront.net/bench/\((t * perTask + i) % urls).pdf"
                let began = ContinuousClock.now
                if (try? await client.sign(url: url, expiresAt: expiresAt)) != nil {
                    let d = ContinuousClock.now - began
                    mine.append(Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15)
                }
            }
            return mine
        }
    }
    var all: [Double] = []
    for await part in group { all += part }
    return all
}
let elapsed = ContinuousClock.now - start
let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
let sorted = latencies.sorted()
func percentile(_ p: Double) -> Double { sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
print(#"{"concurrency":\#(concurrency),"calls":\#(perTask * concurrency),"ok":\#(sorted.count),"seconds":\#(seconds),"requests_per_s":\#(Double(sorted.count) / seconds),"p50_ms":\#(percentile(0.5)),"p99_ms":\#(percentile(0.99))}"#)
client.close()

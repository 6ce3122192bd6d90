import CisternCore
import CisternRouting
import CisternSim

/// What a run kept for its report (only when asked: `ScenarioRunner.run(record:)`):
/// the noted events (faults, kills, restarts, violations), every client operation,
/// and the chain states of every committed routing version.
public struct RunRecording: Sendable {
    public struct Operation: Sendable {
        public var invokedNanoseconds: UInt64
        public var completedNanoseconds: UInt64?
        public var succeeded: Bool
        public var kind: String
    }

    /// A chain's replica states at one committed routing version.
    public struct ChainState: Sendable {
        public var atNanoseconds: UInt64
        public var chain: String
        public var states: [String]
    }

    public var notes: [TraceNote] = []
    public var operations: [Operation] = []
    public var chainStates: [ChainState] = []
    /// Node names in topology order, with their roles.
    public var nodes: [(name: String, role: String)] = []
    public var endNanoseconds: UInt64 = 0
    public var healNanoseconds: UInt64 = 0

    public init() {}

    mutating func add(_ history: History) {
        for op in history.operations {
            operations.append(Operation(invokedNanoseconds: op.invokedNanoseconds, completedNanoseconds: op.completedNanoseconds,
                                        succeeded: op.succeeded == true, kind: op.kind == .read ? "read" : "write"))
        }
    }

    mutating func add(_ recorder: ClusterRecorder) {
        var last: [String: [String]] = [:]
        for (at, routing) in recorder.commits {
            for c in routing.chains {
                let states = c.targets.map { "\($0.state)" }
                let name = "\(c.id)"
                if last[name] != states {
                    chainStates.append(ChainState(atNanoseconds: at, chain: name, states: states))
                    last[name] = states
                }
            }
        }
    }

    /// The common part: notes, topology, times.
    static func base(world: SimWorld, scenario: Scenario) -> RunRecording {
        var r = RunRecording()
        r.notes = world.trace.notes
        r.nodes = scenario.topology.nodes.map { ($0.name, $0.role.rawValue) }
        r.endNanoseconds = world.nowNanoseconds
        r.healNanoseconds = scenario.healTime.nanoseconds
        return r
    }
}

/// Renders a run as one self-contained HTML page (inline SVG and CSS, no scripts or
/// external files): the result, a timeline of faults, node states and chain states
/// over simulated time, client throughput and latency per time bucket, and the list
/// of faults and violations.
public enum RunReport {
    public static func html(_ result: RunResult, _ rec: RunRecording, scenarioText: String? = nil) -> String {
        let end = max(rec.endNanoseconds, 1)
        let width = 1000.0, left = 150.0
        let plotWidth = width - left - 20
        func x(_ t: UInt64) -> Double { left + plotWidth * Double(min(t, end)) / Double(end) }
        var svg = ""
        var y = 10.0

        // Time axis.
        let seconds = Double(end) / 1e9
        let step = [0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300].first { seconds / $0 <= 12 } ?? 600
        func axis(at top: Double, height: Double) {
            var t = 0.0
            while t <= seconds + 1e-9 {
                let px = x(UInt64(t * 1e9))
                svg += "<line x1='\(f(px))' y1='\(f(top))' x2='\(f(px))' y2='\(f(top + height))' class='grid'/>"
                svg += "<text x='\(f(px))' y='\(f(top + height + 12))' class='tick' text-anchor='middle'>\(t == t.rounded() ? String(Int(t)) : f(t))s</text>"
                t += step
            }
            let hx = x(rec.healNanoseconds)
            svg += "<line x1='\(f(hx))' y1='\(f(top))' x2='\(f(hx))' y2='\(f(top + height))' class='heal'><title>heal at \(formatSeconds(rec.healNanoseconds))</title></line>"
        }

        // Faults lane: one marker per noted fault, with its text as a tooltip.
        let faultNotes = rec.notes.filter { [.fault, .heal, .ipChange].contains($0.kind) }
        let laneTop = y
        svg += "<text x='4' y='\(f(y + 14))' class='lane'>faults (\(faultNotes.count))</text>"
        for (i, n) in faultNotes.enumerated() {
            let px = x(n.atNanoseconds)
            let row = Double(i % 3) * 7
            let cls = n.kind == .heal ? "mk-heal" : "mk-fault"
            svg += "<rect x='\(f(px - 1.5))' y='\(f(y + 2 + row))' width='3' height='8' class='\(cls)'><title>\(escape(formatSeconds(n.atNanoseconds) + " " + n.text))</title></rect>"
        }
        y += 30

        // Node lanes: up, paused or down, from the kill/start/pause/resume notes.
        for node in rec.nodes {
            svg += "<text x='4' y='\(f(y + 11))' class='lane'>\(escape(node.name)) <tspan class='role'>\(node.role)</tspan></text>"
            var state = "down", since: UInt64 = 0
            var segments: [(UInt64, UInt64, String)] = []
            for n in rec.notes where n.text.hasPrefix(node.name + " ") {
                let next: String?
                switch n.kind {
                case .restart: next = "up"
                case .kill: next = "down"
                case .pause: next = "paused"
                case .resume: next = "up"
                default: next = nil
                }
                guard let next, next != state else { continue }
                segments.append((since, n.atNanoseconds, state))
                state = next
                since = n.atNanoseconds
            }
            segments.append((since, end, state))
            for (a, b, s) in segments where b > a || s != "down" {
                svg += "<rect x='\(f(x(a)))' y='\(f(y))' width='\(f(max(x(b) - x(a), 0.5)))' height='14' class='st-\(s)'><title>\(escape(node.name)) \(s) \(formatSeconds(a))–\(formatSeconds(b))</title></rect>"
            }
            let jumps = rec.notes.filter { $0.kind == .fault && $0.text.hasPrefix(node.name + " ") }
            for j in jumps {
                svg += "<circle cx='\(f(x(j.atNanoseconds)))' cy='\(f(y + 7))' r='3' class='mk-node'><title>\(escape(formatSeconds(j.atNanoseconds) + " " + j.text))</title></circle>"
            }
            y += 18
        }

        // Chain lanes: colored by the worst replica state.
        let chainNames = rec.chainStates.reduce(into: [String]()) { acc, c in if !acc.contains(c.chain) { acc.append(c.chain) } }
        if !chainNames.isEmpty { y += 6 }
        for name in chainNames.prefix(24) {
            svg += "<text x='4' y='\(f(y + 11))' class='lane'>\(escape(name))</text>"
            let changes = rec.chainStates.filter { $0.chain == name }
            for (i, c) in changes.enumerated() {
                let until = i + 1 < changes.count ? changes[i + 1].atNanoseconds : end
                let worst = ["OFFLINE", "LASTSRV", "WAITING", "SYNCING"].first { c.states.contains($0) } ?? "SERVING"
                svg += "<rect x='\(f(x(c.atNanoseconds)))' y='\(f(y))' width='\(f(max(x(until) - x(c.atNanoseconds), 0.5)))' height='14' class='ch-\(worst.lowercased())'><title>\(escape(name)) \(c.states.joined(separator: " → ")) from \(formatSeconds(c.atNanoseconds))</title></rect>"
            }
            y += 18
        }
        if chainNames.count > 24 {
            svg += "<text x='4' y='\(f(y + 11))' class='lane'>… \(chainNames.count - 24) more chains</text>"
            y += 18
        }
        axis(at: laneTop, height: y - laneTop)
        y += 24

        // Throughput and latency per bucket of completions.
        let buckets = 100
        let bucketNs = max(end / UInt64(buckets), 1)
        var ok = [Int](repeating: 0, count: buckets), failed = [Int](repeating: 0, count: buckets)
        var latencies = [[UInt64]](repeating: [], count: buckets)
        for op in rec.operations {
            guard let done = op.completedNanoseconds else { continue }
            let b = min(Int(done / bucketNs), buckets - 1)
            if op.succeeded {
                ok[b] += 1
                latencies[b].append(done - op.invokedNanoseconds)
            } else {
                failed[b] += 1
            }
        }
        let bucketSeconds = Double(bucketNs) / 1e9
        let rates = (0..<buckets).map { Double(ok[$0] + failed[$0]) / bucketSeconds }
        let maxRate = max(rates.max() ?? 0, 1)
        let chartHeight = 90.0
        let tpTop = y
        svg += "<text x='4' y='\(f(y + 12))' class='lane'>operations/s</text><text x='4' y='\(f(y + 26))' class='role'>max \(Int(maxRate))</text>"
        for b in 0..<buckets where ok[b] + failed[b] > 0 {
            let bx = x(UInt64(b) * bucketNs), bw = max(x(UInt64(b + 1) * bucketNs) - bx - 0.5, 0.5)
            let hOK = chartHeight * Double(ok[b]) / bucketSeconds / maxRate
            let hFail = chartHeight * Double(failed[b]) / bucketSeconds / maxRate
            let tip = "\(formatSeconds(UInt64(b) * bucketNs)): \(ok[b]) ok, \(failed[b]) failed"
            svg += "<rect x='\(f(bx))' y='\(f(tpTop + chartHeight - hOK))' width='\(f(bw))' height='\(f(hOK))' class='ok'><title>\(tip)</title></rect>"
            if failed[b] > 0 {
                svg += "<rect x='\(f(bx))' y='\(f(tpTop + chartHeight - hOK - hFail))' width='\(f(bw))' height='\(f(hFail))' class='failed'><title>\(tip)</title></rect>"
            }
        }
        axis(at: tpTop, height: chartHeight)
        y += chartHeight + 30

        let p50 = latencies.map { percentile($0, 0.5) }, p99 = latencies.map { percentile($0, 0.99) }
        let maxLatency = max(p99.compactMap { $0 }.max() ?? 1, 1)
        let latTop = y
        svg += "<text x='4' y='\(f(y + 12))' class='lane'>latency</text><text x='4' y='\(f(y + 26))' class='role'>max p99 \(ms(maxLatency))</text>"
        // Latency of the operations that completed in each bucket. A bucket where
        // none completed breaks the line: joining across it would draw a ramp that
        // no operation had (blocked operations show up when they complete).
        for (series, cls) in [(p99, "p99"), (p50, "p50")] {
            var runs: [[(Double, Double)]] = [[]]
            for b in 0..<buckets {
                guard let v = series[b] else {
                    if !(runs.last?.isEmpty ?? true) { runs.append([]) }
                    continue
                }
                runs[runs.count - 1].append((x(UInt64(b) * bucketNs + bucketNs / 2), latTop + chartHeight - chartHeight * Double(v) / Double(maxLatency)))
            }
            let halfBucket = (x(bucketNs) - x(0)) / 2
            for run in runs where !run.isEmpty {
                // A lone bucket is drawn as a short level segment across it.
                let points = run.count == 1 ? [(run[0].0 - halfBucket, run[0].1), (run[0].0 + halfBucket, run[0].1)] : run
                svg += "<polyline points='\(points.map { "\(f($0.0)),\(f($0.1))" }.joined(separator: " "))' class='\(cls)'/>"
            }
        }
        axis(at: latTop, height: chartHeight)
        y += chartHeight + 24

        let status = result.passed ? "passed" : "FAILED"
        var html = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8">
            <title>\(escape(result.scenario)) seed \(result.seed): \(status)</title>
            <style>
            body{font:14px system-ui,sans-serif;margin:24px;color:#222;max-width:1040px}
            h1{font-size:20px;margin:0 0 4px} .sub{color:#555;margin-bottom:12px}
            .passed{color:#1a7f37}.FAILED{color:#cf222e}
            table{border-collapse:collapse;margin:8px 0} td,th{padding:2px 10px 2px 0;text-align:left;vertical-align:top}
            code{background:#f3f3f3;padding:1px 4px}
            .grid{stroke:#e5e5e5}.heal{stroke:#1a7f37;stroke-dasharray:4 3}.tick{font-size:10px;fill:#666}
            .lane{font-size:12px;fill:#222}.role{font-size:10px;fill:#888}
            .st-up{fill:#7cc48a}.st-down{fill:#e06c6c}.st-paused{fill:#b9b9b9}
            .ch-serving{fill:#7cc48a}.ch-syncing{fill:#6aa6e8}.ch-waiting{fill:#e8d36a}.ch-lastsrv{fill:#e8a04a}.ch-offline{fill:#e06c6c}
            .mk-fault{fill:#cf222e}.mk-heal{fill:#1a7f37}.mk-node{fill:#6f42c1}
            .ok{fill:#5b8def}.failed{fill:#e06c6c}.p50{fill:none;stroke:#5b8def;stroke-width:1.5}.p99{fill:none;stroke:#e8a04a;stroke-width:1.5}
            .legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px;vertical-align:middle}
            pre{background:#f6f8fa;padding:8px;overflow:auto;font-size:12px}
            </style></head><body>
            <h1>\(escape(result.scenario)) · seed \(result.seed) · <span class="\(status)">\(status)</span></h1>
            <div class="sub">digest <code>\(result.digest)</code> · \(String(format: "%.1f", result.simulatedSeconds)) s simulated in \(String(format: "%.2f", result.wallSeconds)) s · \(result.operationsSucceeded)/\(result.operations) operations succeeded · \(result.faults) fault actions · \(result.messages) messages\(result.faultMix.map { " · swarm mix: " + escape($0) } ?? "")<br>replay: <code>\(escape(result.replay))</code></div>
            <div class="legend">nodes<span class="st-up"></span>up<span class="st-paused"></span>paused<span class="st-down"></span>down · chains<span class="ch-serving"></span>serving<span class="ch-syncing"></span>syncing<span class="ch-waiting"></span>waiting<span class="ch-lastsrv"></span>lastsrv<span class="ch-offline"></span>offline · <span class="mk-fault"></span>fault<span class="mk-heal"></span>heal (dashed line) · latency<span class="ok"></span>p50<span style="background:#e8a04a"></span>p99 · hover for details</div>
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(y))" viewBox="0 0 \(Int(width)) \(Int(y))">\(svg)</svg>

            """
        html += "<h2>Violations</h2>"
        if result.violations.isEmpty {
            html += "<p>none\(result.expectedViolations ? " (violations were expected: the checkers missed the planted failure)" : "")</p>"
        } else {
            html += "<ul>" + result.violations.map { "<li>\(escape($0))</li>" }.joined() + "</ul>"
        }
        if !result.metrics.isEmpty {
            html += "<h2>Metrics</h2><table>" + result.metrics.keys.sorted().map { "<tr><td>\(escape($0))</td><td>\(String(format: "%.4g", result.metrics[$0]!))</td></tr>" }.joined() + "</table>"
        }
        html += "<h2>Events</h2><table><tr><th>time</th><th>event</th></tr>"
        for n in rec.notes.filter({ $0.kind != .spawn }).prefix(2_000) {
            html += "<tr><td>\(formatSeconds(n.atNanoseconds))</td><td>\(n.kind) · \(escape(n.text))</td></tr>"
        }
        html += "</table>"
        if let scenarioText { html += "<h2>Scenario</h2><pre>\(escape(scenarioText))</pre>" }
        html += "</body></html>\n"
        return html
    }

    static func f(_ v: Double) -> String { String(format: "%.1f", v) }

    static func ms(_ ns: UInt64) -> String { String(format: "%.1f ms", Double(ns) / 1e6) }

    static func percentile(_ values: [UInt64], _ p: Double) -> UInt64? {
        guard !values.isEmpty else { return nil }
        let sorted = values.sorted()
        return sorted[min(sorted.count - 1, Int(Double(sorted.count - 1) * p + 0.5))]
    }

    static func escape(_ s: String) -> String {
        // By scalar: a combining mark after '<' must not hide it inside one Character.
        var out = String.UnicodeScalarView()
        for c in s.unicodeScalars {
            switch c {
            case "&": out.append(contentsOf: "&amp;".unicodeScalars)
            case "<": out.append(contentsOf: "&lt;".unicodeScalars)
            case ">": out.append(contentsOf: "&gt;".unicodeScalars)
            case "\"": out.append(contentsOf: "&quot;".unicodeScalars)
            case "'": out.append(contentsOf: "&#39;".unicodeScalars)
            default: out.append(c)
            }
        }
        return String(out)
    }
}

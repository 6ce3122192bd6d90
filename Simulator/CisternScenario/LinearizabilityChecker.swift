/// Checks a read/write register history where every write writes a distinct value,
/// per key, in O(n log n): Gibbons and Korach's zone test. For each value, its
/// cluster is its write plus the reads that returned it; the zone runs from the
/// cluster's earliest completion to its latest invocation. The history is
/// linearizable iff no two forward zones (earliest completion before latest
/// invocation) overlap and no backward zone lies inside a forward zone, and every
/// read returns a value whose write had begun.
///
/// Writes whose outcome is unknown (error or never answered) may have taken effect
/// at any time after their invocation: they complete at infinity, and are dropped
/// when no read returned their value.
public enum LinearizabilityChecker {
    struct Op {
        let start: UInt64
        let end: UInt64
    }

    /// Violations found, each a sentence naming the key and the operations.
    public static func check(_ history: History) -> [String] {
        var byKey: [String: [History.Operation]] = [:]
        for op in history.operations { byKey[op.key, default: []].append(op) }
        var out: [String] = []
        for key in byKey.keys.sorted() { out += check(key: key, byKey[key]!) }
        return out
    }

    static func check(key: String, _ ops: [History.Operation]) -> [String] {
        var out: [String] = []
        let infinity = UInt64.max
        // Clusters keyed by value; nil is the initial (empty) value, written at time 0.
        // Real operations are shifted one nanosecond later so that the initial write
        // strictly precedes even an operation invoked at time 0.
        func shift(_ t: UInt64) -> UInt64 { t == infinity ? t : t + 1 }
        var writes: [String: Op] = [:]
        var reads: [String?: [Op]] = [:]
        for op in ops {
            switch op.kind {
            case .write:
                guard let v = op.value else { continue }
                if writes[v] != nil { out.append("key \(key): value '\(v)' written twice; the workload must write unique values"); continue }
                let end = op.succeeded == true ? (op.completedNanoseconds ?? infinity) : infinity
                writes[v] = Op(start: shift(op.invokedNanoseconds), end: shift(end))
            case .read:
                guard op.succeeded == true, let end = op.completedNanoseconds else { continue }
                reads[op.value, default: []].append(Op(start: shift(op.invokedNanoseconds), end: shift(end)))
            }
        }
        struct Zone {
            let value: String
            let low: UInt64
            let high: UInt64
            let forward: Bool
        }
        var zones: [Zone] = []
        var values: [String?] = [nil]
        values += writes.keys.sorted().map { Optional($0) }
        for value in values {
            let write: Op
            if let v = value {
                write = writes[v]!
            } else {
                write = Op(start: 0, end: 0)
            }
            let rs = reads[value] ?? []
            if value != nil, rs.isEmpty, write.end == infinity { continue }
            for r in rs where r.end < write.start {
                out.append("key \(key): a read returned '\(value ?? "<empty>")' at \(fmt(r.end)), before its write began at \(fmt(write.start))")
            }
            let cluster = [write] + rs
            let minEnd = cluster.map(\.end).min()!
            let maxStart = cluster.map(\.start).max()!
            let name = value ?? "<empty>"
            if minEnd < maxStart {
                zones.append(Zone(value: name, low: minEnd, high: maxStart, forward: true))
            } else {
                zones.append(Zone(value: name, low: maxStart, high: minEnd, forward: false))
            }
        }
        if let v = reads.keys.compactMap({ $0 }).sorted().first(where: { writes[$0] == nil }) {
            out.append("key \(key): a read returned '\(v)', which no client wrote")
        }
        let forward = zones.filter(\.forward).sorted { $0.low < $1.low }
        for i in 0..<forward.count {
            for j in (i + 1)..<forward.count {
                if forward[j].low >= forward[i].high { break }
                out.append("key \(key): not linearizable: values '\(forward[i].value)' and '\(forward[j].value)' were each observed after the other was (zones \(fmt(forward[i].low))–\(fmt(forward[i].high)) and \(fmt(forward[j].low))–\(fmt(forward[j].high)) overlap); a read returned a stale value")
            }
        }
        for b in zones where !b.forward {
            for f in forward where f.low < b.low && b.high < f.high {
                out.append("key \(key): not linearizable: value '\(b.value)' was written and read entirely within \(fmt(f.low))–\(fmt(f.high)), while '\(f.value)' was still being read; '\(b.value)' was lost or a read was stale")
            }
        }
        return out
    }

    static func fmt(_ ns: UInt64) -> String { ns == UInt64.max ? "∞" : String(format: "%.6fs", Double(ns &- 1) / 1e9) }
}

import Foundation

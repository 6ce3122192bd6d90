import CoreMetrics

/// The KV cache index's metrics (swift-metrics; exported by a metadata server's
/// process, no-ops in the simulator): requests and their durations by operation,
/// keys looked up and found (the hit ratio), evictions, and reserves that found no
/// slot to give because every candidate was reserved or under a read lease.
struct KVIndexMetrics: Sendable {
    static let operations = ["create", "describe", "reserve", "confirm", "abort", "lookup", "exists", "delete",
                             "usage", "drop", "list", "audit", "tenant"]
    let requests: [String: Counter]
    /// Requests refused (a client's error: bad input, quota, access) and requests the
    /// index could not serve (its store unavailable), by operation.
    let refused: [String: Counter]
    let unavailable: [String: Counter]
    let durations: [String: CoreMetrics.Timer]
    let lookupKeys = Counter(label: "cistern_kv_lookup_keys_total")
    let lookupHits = Counter(label: "cistern_kv_lookup_hits_total")
    let reservedKeys = Counter(label: "cistern_kv_reserved_keys_total")
    let evictions = Counter(label: "cistern_kv_evictions_total")
    let full = Counter(label: "cistern_kv_reserve_full_total")

    init() {
        var r: [String: Counter] = [:], f: [String: Counter] = [:], u: [String: Counter] = [:], d: [String: CoreMetrics.Timer] = [:]
        for op in Self.operations {
            r[op] = Counter(label: "cistern_kv_requests_total", dimensions: [("op", op)])
            f[op] = Counter(label: "cistern_kv_request_failures_total", dimensions: [("op", op), ("kind", "refused")])
            u[op] = Counter(label: "cistern_kv_request_failures_total", dimensions: [("op", op), ("kind", "unavailable")])
            d[op] = CoreMetrics.Timer(label: "cistern_kv_request_duration_seconds", dimensions: [("op", op)])
        }
        requests = r
        refused = f
        unavailable = u
        durations = d
    }

    static func operation(_ request: KVRequest) -> String {
        switch request {
        case .createNamespace, .createOwnedNamespace: return "create"
        case .describe: return "describe"
        case .reserve: return "reserve"
        case .confirm: return "confirm"
        case .abort: return "abort"
        case .lookup: return "lookup"
        case .exists: return "exists"
        case .delete: return "delete"
        case .usage: return "usage"
        case .drop: return "drop"
        case .list: return "list"
        case .audit: return "audit"
        case .tenant: return "tenant"
        }
    }

    func record(_ request: KVRequest, _ reply: KVReply, nanoseconds: UInt64) {
        let op = Self.operation(request)
        requests[op]?.increment()
        durations[op]?.recordNanoseconds(Int64(clamping: nanoseconds))
        switch reply {
        case .located(let locations):
            lookupKeys.increment(by: locations.count)
            lookupHits.increment(by: locations.reduce(0) { $0 + ($1 == nil ? 0 : 1) })
        case .reserved(let outcomes, let evicted):
            reservedKeys.increment(by: outcomes.count)
            evictions.increment(by: evicted)
            full.increment(by: outcomes.reduce(0) { $0 + ($1 == .full ? 1 : 0) })
        case .refused:
            refused[op]?.increment()
        case .unavailable:
            unavailable[op]?.increment()
        default:
            break
        }
    }
}

/// The RDMA devices this host has, as found by `RDMAProbe.devices()`.
public enum RDMADeviceList: Sendable, Equatable, CustomStringConvertible {
    /// At least one device; their names (for example "mlx5_0"), in the order libibverbs
    /// lists them.
    case devices([String])
    /// No device can be used; `reason` names the errno when libibverbs gave one.
    case none(reason: String)

    /// The device names, empty for `.none`.
    public var names: [String] {
        if case .devices(let names) = self { return names }
        return []
    }

    /// The device names, or why there are none.
    public var description: String {
        switch self {
        case .devices(let names): return "RDMA devices: " + names.joined(separator: ", ")
        case .none(let reason): return "no RDMA devices: \(reason)"
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Why an RDMA operation failed. Every case names what failed precisely enough to act
/// on it: the verbs call and its errno text, the device, the port, or the work
/// request's completion status.
public enum RDMAError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The verbs call `call` (for example "ibv_create_qp") failed with `errno`;
    /// `text` is the C library's description of it.
    case verbs(call: String, errno: Int32, text: String)
    /// No device is named `name`; `available` lists the devices this host has.
    case noSuchDevice(name: String, available: [String])
    /// The device's port is not in the ACTIVE state (cable, subnet manager or link down).
    case portNotActive(device: String, port: UInt8, state: String)
    /// A work request completed with an error status (`status` is libibverbs' text
    /// for it, `vendorError` the adapter's own code). The queue pair is in the error
    /// state afterwards and carries no further work.
    case completionFailed(operation: String, status: String, vendorError: UInt32)
    /// A local or remote address range is not covered by a registered memory region.
    case memoryRegion(MemoryRegionError)
    /// A value out of the range the verbs layer accepts (for example a transfer of
    /// more than 4 GiB in one work request).
    case invalidArgument(String)
    /// The queue pair is not connected yet, or was closed.
    case notConnected(String)
    /// The device or transport was closed.
    case shutdown

    /// The error for verbs call `call` that failed with errno `code`.
    static func verbs(_ call: String, _ code: Int32) -> RDMAError {
        .verbs(call: call, errno: code, text: describeErrno(code))
    }

    /// The error for verbs call `call` that returned NULL (or -1) and set `errno`.
    static func verbsFromErrno(_ call: String) -> RDMAError {
        let code = errno
        return .verbs(call, code != 0 ? code : EIO)
    }

    /// The failure in words, naming the call, device or status involved.
    public var description: String {
        switch self {
        case .verbs(let call, let code, let text):
            return "\(call) failed: \(text) (errno \(code))"
        case .noSuchDevice(let name, let available):
            let have = available.isEmpty ? "this host has none" : "this host has " + available.joined(separator: ", ")
            return "no RDMA device named \(name); \(have)"
        case .portNotActive(let device, let port, let state):
            return "port \(port) of \(device) is \(state), not ACTIVE; check the link and the subnet manager"
        case .completionFailed(let operation, let status, let vendorError):
            return "\(operation) completed with error: \(status) (vendor error 0x\(String(vendorError, radix: 16)))"
        case .memoryRegion(let error):
            return error.description
        case .invalidArgument(let text):
            return "invalid argument: \(text)"
        case .notConnected(let text):
            return "queue pair not connected: \(text)"
        case .shutdown:
            return "the RDMA device is closed"
        }
    }
}

/// The C library's text for errno `code`.
func describeErrno(_ code: Int32) -> String {
    strerror(code).map { String(cString: $0) } ?? "unknown error \(code)"
}

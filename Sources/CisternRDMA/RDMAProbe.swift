import CIBVerbs

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Capability checks for RDMA (libibverbs).
///
/// Promises: `devices()` asks libibverbs for the device list and frees it before
/// returning; it never crashes. A NULL list or an empty one gives `.none` with the
/// errno text (ENOSYS where the kernel has no RDMA support or no device).
public enum RDMAProbe {
    /// The RDMA devices libibverbs lists, or why there are none.
    public static func devices() -> RDMADeviceList {
        var count: Int32 = 0
        errno = 0
        guard let list = ibv_get_device_list(&count) else {
            return .none(reason: "ibv_get_device_list failed: \(describe(errno))")
        }
        let code = errno
        defer { ibv_free_device_list(list) }
        var names: [String] = []
        for index in 0..<Int(max(count, 0)) {
            guard let device = list[index] else { break }
            if let name = ibv_get_device_name(device) {
                names.append(String(cString: name))
            } else {
                names.append("device\(index)")
            }
        }
        if names.isEmpty {
            let why = code != 0 ? describe(code) : "libibverbs found no devices"
            return .none(reason: "ibv_get_device_list returned no devices: \(why)")
        }
        return .devices(names)
    }

    static func describe(_ code: Int32) -> String {
        let text = strerror(code).map { String(cString: $0) } ?? "unknown error"
        return "\(text) (errno \(code))"
    }
}

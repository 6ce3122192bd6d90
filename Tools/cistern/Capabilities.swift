import CisternRDMA
import CisternURing

/// What this machine offers the production I/O paths, and what is used instead.
enum Capabilities {
    static func report() -> [String] {
        var lines: [String] = []
        switch IOUringProbe.probe() {
        case .available:
            lines.append("io_uring: available (DiskFactory gives the chunk engine the io_uring disk: batched submission on a ring)")
        case .unavailable(let reason):
            lines.append("io_uring: unavailable (\(reason)); the POSIX disk (pread/pwrite on a thread pool) is used instead")
        }
        switch RDMAProbe.devices() {
        case .devices(let names):
            lines.append("RDMA: \(names.count) device(s): \(names.joined(separator: ", "))")
        case .none(let reason):
            lines.append("RDMA: no device (\(reason)); the TCP transport carries bulk data instead")
        }
        return lines
    }
}

import CisternRDMA
import CisternURing

/// What this machine offers the production I/O paths, and what is used instead.
enum Capabilities {
    static func report() -> [String] {
        var lines: [String] = []
        switch IOUringProbe.probe() {
        case .available:
            lines.append("io_uring: available (the io_uring disk comes with the storage service; the POSIX disk is used until then)")
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

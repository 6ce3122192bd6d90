import CisternRDMA
import CisternURing
import Testing

@Suite struct CapabilityProbeTests {
    @Test func ioUringProbeAnswersWithoutCrashing() {
        let support = IOUringProbe.probe()
        switch support {
        case .available:
            break
        case .unavailable(let reason):
            #expect(reason.contains("errno"), "the reason names the errno: \(reason)")
        }
        // The probe can run again: the ring was torn down.
        #expect(IOUringProbe.probe() == support)
    }

    @Test func oDirectFlagIsTheKernelValue() {
        #if arch(x86_64)
        #expect(IOUringProbe.oDirectFlag == 0o40000)
        #else
        #expect(IOUringProbe.oDirectFlag != 0)
        #endif
    }

    @Test func rdmaProbeReportsNoDevicesWithTheErrno() {
        switch RDMAProbe.devices() {
        case .devices(let names):
            // A host with RDMA hardware: every device has a name.
            #expect(!names.isEmpty)
            #expect(names.allSatisfy { !$0.isEmpty })
        case .none(let reason):
            #expect(reason.contains("errno"), "the reason names the errno: \(reason)")
        }
    }
}

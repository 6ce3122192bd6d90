import CisternRDMA
import Testing

@Suite struct RDMAProbeSmokeTests {
    /// The probe never crashes and always names what it found.
    @Test func probeReportsDevicesOrAReason() {
        let found = RDMAProbe.devices()
        switch found {
        case .devices(let names): #expect(!names.isEmpty)
        case .none(let reason): #expect(!reason.isEmpty)
        }
    }
}

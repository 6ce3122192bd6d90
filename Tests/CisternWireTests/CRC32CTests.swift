import CisternWire
import Foundation
import Testing

/// The hardware CRC-32C must equal the table everywhere: every length across the
/// 3-stream block boundaries (768 bytes), every start alignment, continued checksums.
@Suite struct CRC32CTests {
    /// Deterministic test bytes (splitmix64), so a failure names a reproducible input.
    static func bytes(_ count: Int, seed: UInt64) -> [UInt8] {
        var state = seed
        var out = [UInt8](repeating: 0, count: count)
        for i in 0..<count {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            out[i] = UInt8(truncatingIfNeeded: z ^ (z >> 31))
        }
        return out
    }

    @Test func theDispatchFindsTheInstructionThisCPUAdvertises() throws {
        #if os(Linux) && arch(x86_64)
        let cpuinfo = try String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)
        #expect(CRC32C.usesHardware == cpuinfo.contains(" sse4_2"))
        #elseif os(Linux) && arch(arm64)
        let cpuinfo = try String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)
        #expect(CRC32C.usesHardware == cpuinfo.contains(" crc32"))
        #endif
    }

    @Test func hardwareAndSoftwareAgreeOnEveryLengthAndAlignment() {
        let data = Self.bytes(2_400 + 16, seed: 1)
        data.withUnsafeBytes { all in
            for length in 0...2_400 {
                for alignment in 0..<8 {
                    let slice = UnsafeRawBufferPointer(rebasing: all[alignment..<(alignment + length)])
                    let fast = CRC32C.checksum(slice)
                    let reference = CRC32C.software(slice)
                    if fast != reference {
                        Issue.record("length \(length) alignment \(alignment): \(fast) != \(reference)")
                        return
                    }
                }
            }
        }
    }

    @Test func hardwareAndSoftwareAgreeOnLargeRandomBuffersAndContinuations() {
        for seed in UInt64(1)...24 {
            let length = Int(seed * 45_677 % 1_048_577)
            let data = Self.bytes(length + 16, seed: seed)
            data.withUnsafeBytes { all in
                let alignment = Int(seed % 16)
                let slice = UnsafeRawBufferPointer(rebasing: all[alignment..<(alignment + length)])
                let whole = CRC32C.checksum(slice)
                #expect(whole == CRC32C.software(slice), "seed \(seed) length \(length)")
                let cut = length / 3
                let first = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: slice[..<cut]))
                let both = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: slice[cut...]), continuing: first)
                #expect(both == whole, "seed \(seed): continuing at \(cut)")
            }
        }
    }

    @Test func knownCheckValuesOnBothPaths() {
        let digits = Array("123456789".utf8)
        #expect(digits.withUnsafeBytes { CRC32C.software($0) } == 0xE306_9283)
        #expect(CRC32C.checksum(digits) == 0xE306_9283)
        // RFC 3720 (iSCSI) B.4: 32 bytes of zeros, and 32 bytes of 0xFF.
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        #expect(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43)
    }
}

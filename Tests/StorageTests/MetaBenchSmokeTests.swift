import CisternBench
import Foundation
import Testing

/// Runs `cistern bench meta`'s measuring code at tiny sizes: every figure comes out
/// positive and the scratch directory is removed. No timing assertions.
@Suite struct MetaBenchSmokeTests {
    @Test func tinyRunGivesPositiveFiguresAndCleansUp() async throws {
        let parent = FileManager.default.temporaryDirectory.appendingPathComponent("cistern-metabenchsmoke-\(UInt64.random(in: 0...UInt64.max))").path
        defer { try? FileManager.default.removeItem(atPath: parent) }
        let options = MetaBenchmark.Options(directory: parent, creates: 12, concurrency: 3, directories: 4, selectSeconds: 0.02)
        let report = try await MetaBenchmark.run(options)

        let shape = report.shape
        #expect(shape.setsPerCreate > 0 && shape.keyBytesPerCreate > 0 && shape.valueBytesPerCreate > 0)
        #expect(shape.getsPerCreate > 0 && shape.getsPerStat > 0)
        let raw = report.raw
        #expect(raw.transactions == 12 && raw.rowsPerTransaction == shape.setsPerCreate)
        #expect(raw.selects >= raw.transactions * raw.rowsPerTransaction)
        for figure in [raw.transactionsPerSecond, raw.rowsPerSecond, raw.selectsPerSecond] {
            #expect(figure > 0 && figure.isFinite)
        }
        #expect(report.services.map(\.concurrency) == [1, 3])
        for s in report.services {
            #expect(s.creates == 12)
            for figure in [s.createsPerSecond, s.statsPerSecond, s.pairsPerSecond] {
                #expect(figure > 0 && figure.isFinite, "x\(s.concurrency)")
            }
        }
        #expect(report.rows.count == 3 + 3 * report.services.count)
        for row in report.rows {
            #expect(row.value > 0 && row.value.isFinite, "\(row.name)")
            if let ratio = row.ratio { #expect(ratio > 0 && ratio.isFinite, "\(row.name)") }
        }
        #expect(MetaBenchmark.table(report).contains("meta create+stat x3"))
        #expect(!FileManager.default.fileExists(atPath: report.directory))
    }
}

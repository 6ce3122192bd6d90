import Foundation
import Testing

/// The `cistern` executable built beside this test bundle.
func cisternBinary() -> String? {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
    if dir.lastPathComponent == "MacOS" || dir.path.hasSuffix(".xctest/Contents") { dir = dir.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent() }
    let candidate = dir.appendingPathComponent("cistern").path
    return FileManager.default.isExecutableFile(atPath: candidate) ? candidate : nil
}

/// Runs `cistern sim --json` in a separate process and returns the digest per seed.
func digests(_ binary: String, _ scenario: String, seeds: String) throws -> [UInt64: String] {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: binary)
    p.arguments = ["sim", scenario, "--seeds", seeds, "--json"]
    let out = Pipe()
    p.standardOutput = out
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    var result: [UInt64: String] = [:]
    for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
        let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
        result[(object["seed"] as! NSNumber).uint64Value] = object["digest"] as? String
    }
    return result
}

@Suite struct CrossProcessDeterminismTests {
    @Test func sameSeedSameDigestInSeparateProcessesAndTwentySeedsDiffer() throws {
        let binary = try #require(cisternBinary(), "build the cistern executable first (swift build); the test runs it in separate processes")
        let path = repositoryRoot + "/Scenarios/register-kill-partition-ipchange.yaml"
        let first = try digests(binary, path, seeds: "1...20")
        let second = try digests(binary, path, seeds: "1...20")
        #expect(first.count == 20)
        #expect(first == second)
        #expect(Set(first.values).count == 20)
    }
}

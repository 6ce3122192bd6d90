import Cistern
import CisternServer
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Whether this process may mount tmpfs (root, and a kernel that allows it).
enum TmpfsProbe {
    static let canMount: Bool = {
        guard getuid() == 0 else { return false }
        let probe = NSTemporaryDirectory() + "cistern-tmpfs-probe-\(getpid())"
        try? FileManager.default.createDirectory(atPath: probe, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: probe) }
        guard TmpfsProbe.sh("mount -t tmpfs -o size=1m tmpfs '\(probe)'") == 0 else { return false }
        _ = TmpfsProbe.sh("umount '\(probe)'")
        return true
    }()

    @discardableResult
    static func sh(_ command: String) -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", command + " >/dev/null 2>&1"]
        guard (try? p.run()) != nil else { return -1 }
        p.waitUntilExit()
        return p.terminationStatus
    }

}

/// A real local cluster whose storage nodes sit on small tmpfs file systems: once
/// they fill, a put is refused at once with an error naming the full target and the
/// fix, `cistern admin targets` shows it, reads keep working, and once space is
/// freed writes work again without a restart. Needs root (to mount tmpfs): without
/// it the suite is skipped, and says so.
@Suite(.serialized, .enabled(if: TmpfsProbe.canMount, "mounting tmpfs needs root; the full-disk test is skipped"))
struct FullDiskTests {
    @Test func aFullStorageDiskRefusesPutsAtOnceSaysWhereAndRecovers() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: LocalClusterKillTests.binary), "build the cistern binary first (swift build)")
        let dir = NSTemporaryDirectory() + "cistern-full-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        let mounts = (1...3).map { "\(dir)/data/storage\($0)" }
        defer {
            for m in mounts { TmpfsProbe.sh("umount -l '\(m)'") }
            try? FileManager.default.removeItem(atPath: dir)
        }
        for m in mounts {
            try FileManager.default.createDirectory(atPath: m, withIntermediateDirectories: true)
            let status = TmpfsProbe.sh("mount -t tmpfs -o size=40m tmpfs '\(m)'")
            guard status == 0 else {
                Issue.record("mount tmpfs on \(m) failed with status \(status)")
                return
            }
        }
        let cluster = LocalCluster(dataDir: dir)
        // Room an operator can give back later: a filler file on every node's disk.
        for m in mounts { TmpfsProbe.sh("dd if=/dev/zero of='\(m)/filler' bs=1M count=12") }
        do {
            try await cluster.up(storageNodes: 3, binary: LocalClusterKillTests.binary)
            let session = try await ClientSession.connect(cluster, name: "full-disk")
            let ns = try await session.client.kvNamespace("full", pageBytes: 1 << 20, capacityPages: 10_000)
            func page(_ i: Int) -> [UInt8] { (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &+ i &* 7) } }

            // Fill: batches of 4 pages until a put is refused for space.
            var stored: [Int] = []
            var refusal: String?
            var refusalSeconds = 0.0
            var next = 0
            while refusal == nil && next < 400 {
                let keys = Array(next..<next + 4)
                next += 4
                let started = Date()
                let outcomes = try await ns.put(keys.map { ("p\($0)", page($0)) })
                for (k, o) in zip(keys, outcomes) {
                    switch o {
                    case .stored: stored.append(k)
                    case .noSpace(let why):
                        refusal = refusal ?? why
                        refusalSeconds = Date().timeIntervalSince(started)
                    default: Issue.record("p\(k): \(o) while filling (expected stored or noSpace)")
                    }
                }
            }
            let why = try #require(refusal, "400 pages of 1 MiB fitted on 3 x 40 MiB: the disks never filled")
            #expect(stored.count >= 4, "only \(stored.count) pages fitted before the disks were declared full")
            #expect(why.contains("no space left on target#") && why.contains("free space or add storage") && why.contains("/data/storage"),
                    "the refusal does not name the target, its path and the fix: \(why)")
            // Retrying a refused write runs the client's whole budget (80 attempts,
            // up to 400 ms apart: ~30 s); a clear refusal takes one round trip. The
            // bound sits far from both so a loaded 2-core machine cannot flake it.
            #expect(refusalSeconds < 15, "the full disk was said after \(refusalSeconds) s (retries instead of a clear refusal)")

            // The manager shows it: `cistern admin targets` marks the full target(s).
            var shown = ""
            for _ in 0..<20 {
                shown = try runCistern(["admin", "targets", "--data-dir", dir]).1
                if shown.contains("NO SPACE") { break }
                try await Task.sleep(nanoseconds: 500_000_000)
            }
            #expect(shown.contains("NO SPACE: no space left on"), "cistern admin targets does not show the full target:\n\(shown)")
            // The storage log says it once per target, not once per write.
            var logged = 0
            for n in 1...3 {
                let text = (try? String(contentsOfFile: "\(dir)/logs/storage\(n).log", encoding: .utf8)) ?? ""
                logged += text.components(separatedBy: "no space left on").count - 1
            }
            #expect(logged >= 1 && logged <= 12, "the storage logs say 'no space left' \(logged) times (expected about once per full target)")

            // Reads keep working.
            let sample = Array(stored.prefix(8))
            let got = try await ns.get(sample.map { "p\($0)" })
            for (k, g) in zip(sample, got) { #expect(g.bytes == page(k), "p\(k) does not read back while the disks are full") }

            // The operator frees space: puts work again, without a restart, and the
            // report clears.
            for m in mounts { try? FileManager.default.removeItem(atPath: "\(m)/filler") }
            var recovered = false
            for attempt in 0..<20 where !recovered {
                let k = 10_000 + attempt
                if try await ns.put([("p\(k)", page(k))])[0] == .stored { recovered = true } else { try await Task.sleep(nanoseconds: 500_000_000) }
            }
            #expect(recovered, "puts still fail after space was freed")
            var cleared = false
            for _ in 0..<20 where !cleared {
                cleared = !(try runCistern(["admin", "targets", "--data-dir", dir]).1.contains("NO SPACE"))
                if !cleared { try await Task.sleep(nanoseconds: 500_000_000) }
            }
            #expect(cleared, "cistern admin targets still shows NO SPACE after space was freed")
            let again = try await ns.get(sample.map { "p\($0)" })
            for (k, g) in zip(sample, again) { #expect(g.bytes == page(k), "p\(k) after recovery") }
            await session.close()
        } catch {
            try? await cluster.down()
            throw error
        }
        try await cluster.down()
    }

    /// The metadata store fills (its own small volume): mkdir is refused at once with
    /// the store's path and the fix, not retried for minutes; once space is freed it
    /// works again without a restart.
    @Test func aFullMetadataStoreRefusesChangesAtOnceSaysWhereAndRecovers() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: LocalClusterKillTests.binary), "build the cistern binary first (swift build)")
        let dir = NSTemporaryDirectory() + "cistern-metafull-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        let mount = "\(dir)/kv/meta"
        defer {
            TmpfsProbe.sh("umount -l '\(mount)'")
            try? FileManager.default.removeItem(atPath: dir)
        }
        try FileManager.default.createDirectory(atPath: mount, withIntermediateDirectories: true)
        let status = TmpfsProbe.sh("mount -t tmpfs -o size=8m tmpfs '\(mount)'")
        guard status == 0 else {
            Issue.record("mount tmpfs on \(mount) failed with status \(status)")
            return
        }
        let cluster = LocalCluster(dataDir: dir)
        do {
            try await cluster.up(storageNodes: 1, binary: LocalClusterKillTests.binary)
            let session = try await ClientSession.connect(cluster, name: "meta-full")
            let client = session.client
            _ = try await client.mkdir("/before")
            // Fill the volume to the last byte.
            TmpfsProbe.sh("dd if=/dev/zero of='\(mount)/filler' bs=64k")
            var refusal: String?
            var refusalSeconds = 0.0
            var made = 0
            for i in 0..<2_000 where refusal == nil {
                let started = Date()
                do {
                    _ = try await client.mkdir("/d\(i)")
                    made += 1
                } catch {
                    refusal = "\(error)"
                    refusalSeconds = Date().timeIntervalSince(started)
                }
            }
            let why = try #require(refusal, "2000 directories fitted on a full 8 MiB volume: the store never filled")
            #expect(why.contains("out of space") && why.contains("free space on the volume holding") && why.contains("/kv/meta/meta.sqlite"),
                    "the refusal does not name the store, its path and the fix: \(why)")
            // The client retries an unavailable server for about a minute; a refusal is one round trip.
            #expect(refusalSeconds < 15, "the full store was said after \(refusalSeconds) s (retries instead of a clear refusal)")
            // Reads keep working.
            #expect(try await client.stat("/before").type == .directory)
            // The operator frees space: changes work again, without a restart.
            try FileManager.default.removeItem(atPath: "\(mount)/filler")
            var recovered = false
            for attempt in 0..<20 where !recovered {
                do {
                    _ = try await client.mkdir("/after\(attempt)")
                    recovered = true
                } catch {
                    try await Task.sleep(nanoseconds: 500_000_000)
                }
            }
            #expect(recovered, "mkdir still fails after space was freed")
            #expect(try await client.stat("/before").type == .directory)
            await session.close()
        } catch {
            try? await cluster.down()
            throw error
        }
        try await cluster.down()
    }
}

import CisternCore
import CisternPOSIX

/// Picks the best `Disk` implementation this process can use.
public enum DiskFactory {
    /// A disk rooted at `root` (created if missing): an `IOUringDisk` when
    /// `IOUringProbe.probe()` is `.available` and the ring has the operations it needs,
    /// otherwise a `POSIXDisk`. `kind` is "io_uring", or
    /// "posix (io_uring unavailable: <reason>)" naming why io_uring was not used.
    ///
    /// Throws what the chosen implementation's initializer throws for a bad root
    /// (`invalidPath`, or the `mkdir` error); never throws because io_uring is missing.
    public static func makeBest(root: String) throws(DiskError) -> (disk: any Disk, kind: String) {
        let reason: String
        switch IOUringProbe.probe() {
        case .available:
            do throws(DiskError) {
                return (try IOUringDisk(root: root), "io_uring")
            } catch {
                guard case .unavailable(let why) = error else { throw error }
                reason = why
            }
        case .unavailable(let why):
            reason = why
        }
        return (try POSIXDisk(root: root), "posix (io_uring unavailable: \(reason))")
    }
}

import NIOPosix

/// The threads disk jobs block on. NIO's shared blocking pool has one thread per core,
/// so on a small machine at most two disk batches (each waiting for its fsync) would
/// be in flight per process, however many requests wait: the storage node's whole
/// disk queue depth. Disks get a pool of their own, as deep as the queue depth a
/// target should keep in flight.
public enum DiskThreadPool {
    /// Threads in `shared`.
    public static let threads = 32

    /// Started on first use, for the life of the process.
    public static let shared: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: threads)
        pool.start()
        return pool
    }()
}

#if canImport(Glibc)
import CMalloc
import Glibc
#endif

/// Allocator settings for processes that move large buffers (storage and metadata
/// servers, the benchmark's client). glibc serves every allocation of 128 KiB or more
/// with a fresh `mmap` and returns it with `munmap` (its adaptive threshold moves up
/// only to the largest size freed so far, and trimming gives the heap back as well),
/// so each 64 KiB-1 MiB page buffer on the data path costs page faults and zeroing of
/// fresh memory: `perf` showed `exc_page_fault` and `clear_page_erms` at about 8% of
/// all cycles during puts. Serving them from the heap and keeping freed memory for
/// reuse removes that; the process keeps up to its peak of buffers in flight (which
/// the request limits bound) instead of returning it to the system at once.
public enum LargeBuffers {
    /// Allocations below this come from the heap (glibc's largest allowed setting).
    public static let mmapThresholdBytes: Int32 = 32 << 20
    /// Free memory at the heap's top kept rather than trimmed.
    public static let trimThresholdBytes: Int32 = 512 << 20

    /// Applies the settings once for this process (a no-op off glibc). An environment
    /// that sets `MALLOC_MMAP_THRESHOLD_` keeps its own choice.
    public static func tuneAllocator() {
        #if canImport(Glibc)
        if getenv("MALLOC_MMAP_THRESHOLD_") != nil { return }
        _ = mallopt(M_MMAP_THRESHOLD, mmapThresholdBytes)
        _ = mallopt(M_TRIM_THRESHOLD, trimThresholdBytes)
        #endif
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Runs a closure on a fresh thread and waits for it: the simulator thread. Using a
/// thread of our own keeps the simulation off Swift's cooperative pool, so the
/// caller may be async or not.
public enum SimThread {
    /// Stack size for the simulator thread, in bytes.
    public static let stackBytes = 64 << 20

    final class Thunk: @unchecked Sendable {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    final class ResultBox<T>: @unchecked Sendable {
        var value: T?
    }

    public static func run<T>(_ body: @escaping () -> T) -> T {
        let box = ResultBox<T>()
        runThunk(Thunk { box.value = body() })
        return box.value!
    }

    static func runThunk(_ thunk: Thunk) {
        var attr = pthread_attr_t()
        pthread_attr_init(&attr)
        pthread_attr_setstacksize(&attr, stackBytes)
        let context = Unmanaged.passRetained(thunk).toOpaque()
        #if canImport(Glibc)
        var thread = pthread_t()
        #else
        var thread: pthread_t? = nil
        #endif
        let rc = pthread_create(&thread, &attr, simThreadEntry, context)
        pthread_attr_destroy(&attr)
        precondition(rc == 0, "pthread_create failed: \(rc)")
        #if canImport(Glibc)
        pthread_join(thread, nil)
        #else
        pthread_join(thread!, nil)
        #endif
        Unmanaged<Thunk>.fromOpaque(context).release()
    }
}

private func simThreadEntry(_ raw: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    // Note: the thread inherits its creator's name (often a dispatch worker's,
    // "…root.default-qos"), so in a crash report the simulator thread can look like
    // Swift's global pool. (pthread_setname_np is hidden from Swift's Glibc.)
    let thunk = Unmanaged<SimThread.Thunk>.fromOpaque(raw!).takeUnretainedValue()
    thunk.body()
    return nil
}

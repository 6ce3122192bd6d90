#ifndef CISTERN_CURINGSHIM_H
#define CISTERN_CURINGSHIM_H

// Plain-C wrappers over liburing. Only standard C types and the opaque
// `struct cistern_ring` cross this boundary, so Swift never sees a glibc struct
// compiled under liburing's feature macros (see Sources/CURing/shim.h).
//
// Every function returning int returns 0 (or a count) on success and -errno on
// failure, like liburing. A ring is not thread-safe: use it from one thread at a time.

#include <stdint.h>

/// Creates and destroys a ring of `entries` entries. Returns 0, or -errno.
int cistern_uring_probe(unsigned entries);

/// The platform's O_DIRECT open flag (it differs between architectures).
int cistern_o_direct(void);

/// An io_uring instance (liburing's `struct io_uring`, hidden).
struct cistern_ring;

/// One completion: the `user_data` given when the operation was prepared, and the
/// kernel's result (bytes transferred, 0, or -errno).
struct cistern_completion {
    uint64_t user_data;
    int32_t res;
};

/// Creates a ring with `entries` submission entries (the completion queue has twice as
/// many). Stores it in `*out` and returns 0, or returns -errno and leaves `*out` NULL.
int cistern_ring_create(unsigned entries, struct cistern_ring **out);

/// Tears down the ring and frees it. Operations still in flight are cancelled by the
/// kernel; their buffers must not be freed before they complete.
void cistern_ring_destroy(struct cistern_ring *ring);

/// The number of submission entries the ring was created with.
unsigned cistern_ring_entries(const struct cistern_ring *ring);

/// Whether the kernel supports every operation `IOUringDisk` uses (READ, WRITE, FSYNC,
/// FALLOCATE; Linux 5.6 or later): 1 if it does, 0 if not, -errno if the probe fails.
int cistern_ring_supports_disk_ops(struct cistern_ring *ring);

/// Queue a `pread(fd, buf, nbytes, offset)`. Returns 0, or -EBUSY when the submission
/// queue is full (submit first).
int cistern_ring_prep_read(struct cistern_ring *ring, int fd, void *buf, unsigned nbytes,
                           uint64_t offset, uint64_t user_data);

/// Queue a `pwrite(fd, buf, nbytes, offset)`. Returns 0, or -EBUSY when the submission
/// queue is full.
int cistern_ring_prep_write(struct cistern_ring *ring, int fd, const void *buf, unsigned nbytes,
                            uint64_t offset, uint64_t user_data);

/// Queue an `fsync(fd)`. Returns 0, or -EBUSY when the submission queue is full.
int cistern_ring_prep_fsync(struct cistern_ring *ring, int fd, uint64_t user_data);

/// Queue a `fallocate(fd, FALLOC_FL_KEEP_SIZE, offset, length)`: reserves space without
/// changing the file size. Returns 0, or -EBUSY when the submission queue is full.
int cistern_ring_prep_fallocate_keep_size(struct cistern_ring *ring, int fd, uint64_t offset,
                                          uint64_t length, uint64_t user_data);

/// Submits every queued entry and waits until at least `wait_nr` completions are
/// available (0: do not wait). Returns the number of entries submitted, or -errno
/// (-EINTR when a signal interrupted the wait: call again).
int cistern_ring_submit_and_wait(struct cistern_ring *ring, unsigned wait_nr);

/// Copies up to `max` available completions into `out` and consumes them, without
/// waiting. Returns how many were copied (0 when none is available).
unsigned cistern_ring_peek(struct cistern_ring *ring, struct cistern_completion *out, unsigned max);

// MARK: Direct I/O helpers (for `cistern bench disk`)

/// Opens `path` read-write with O_DIRECT and O_CLOEXEC (and O_CREAT, mode 0644, when
/// `create` is nonzero). Returns the descriptor, or -errno (-EINVAL when the file
/// system does not support O_DIRECT).
int cistern_open_direct(const char *path, int create);

/// `posix_memalign`: `bytes` bytes aligned to `alignment` (a power of two, a multiple
/// of sizeof(void *)), or NULL. Free with `cistern_aligned_free`.
void *cistern_aligned_alloc(uint64_t alignment, uint64_t bytes);

/// Frees memory from `cistern_aligned_alloc` (NULL is ignored).
void cistern_aligned_free(void *pointer);

/// Runs `count` reads (`is_write` zero) or writes (`is_write` nonzero) of `block_bytes` bytes
/// each on `fd`, the i-th at `offsets[i]`, keeping up to `depth` of them in flight on
/// `ring` (`depth` at most the ring's entries). Slot k of the in-flight window uses
/// the buffer `buffers + k * block_bytes`, so `buffers` must hold `depth * block_bytes`
/// bytes (aligned for O_DIRECT). Operations are issued in order; a short transfer is
/// an error (-EIO). Returns 0, or the -errno of the first failure once every operation
/// in flight has completed (no new ones are issued after a failure). If submission
/// itself fails, returns its -errno at once: operations may still be in flight, so
/// destroy the ring but neither free the buffers nor close `fd` before exiting.
int cistern_ring_run_fixed_io(struct cistern_ring *ring, int fd, int is_write, void *buffers,
                              unsigned block_bytes, const uint64_t *offsets, unsigned count,
                              unsigned depth);

/// The same with `pread`/`pwrite`, one at a time (queue depth 1), all into or from
/// `buffer` (`block_bytes` bytes), for machines without io_uring. Returns 0 or -errno.
int cistern_sync_run_fixed_io(int fd, int is_write, void *buffer, unsigned block_bytes,
                              const uint64_t *offsets, unsigned count);

#endif

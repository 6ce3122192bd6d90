#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
#include <liburing.h>

#include "CURingShim.h"

int cistern_uring_probe(unsigned entries) {
    struct io_uring ring;
    int rc = io_uring_queue_init(entries, &ring, 0);
    if (rc < 0) {
        return rc;
    }
    io_uring_queue_exit(&ring);
    return 0;
}

int cistern_o_direct(void) { return O_DIRECT; }

struct cistern_ring {
    struct io_uring ring;
    unsigned entries;
};

int cistern_ring_create(unsigned entries, struct cistern_ring **out) {
    *out = NULL;
    struct cistern_ring *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        return -ENOMEM;
    }
    int rc = io_uring_queue_init(entries, &r->ring, 0);
    if (rc < 0) {
        free(r);
        return rc;
    }
    r->entries = r->ring.sq.ring_entries;
    *out = r;
    return 0;
}

void cistern_ring_destroy(struct cistern_ring *ring) {
    if (ring == NULL) {
        return;
    }
    io_uring_queue_exit(&ring->ring);
    free(ring);
}

unsigned cistern_ring_entries(const struct cistern_ring *ring) { return ring->entries; }

int cistern_ring_supports_disk_ops(struct cistern_ring *ring) {
    struct io_uring_probe *probe = io_uring_get_probe_ring(&ring->ring);
    if (probe == NULL) {
        // IORING_REGISTER_PROBE arrived in 5.6, with IORING_OP_READ/WRITE/FALLOCATE.
        return 0;
    }
    int ok = io_uring_opcode_supported(probe, IORING_OP_READ) &&
             io_uring_opcode_supported(probe, IORING_OP_WRITE) &&
             io_uring_opcode_supported(probe, IORING_OP_FSYNC) &&
             io_uring_opcode_supported(probe, IORING_OP_FALLOCATE);
    io_uring_free_probe(probe);
    return ok ? 1 : 0;
}

int cistern_ring_prep_read(struct cistern_ring *ring, int fd, void *buf, unsigned nbytes,
                           uint64_t offset, uint64_t user_data) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring->ring);
    if (sqe == NULL) {
        return -EBUSY;
    }
    io_uring_prep_read(sqe, fd, buf, nbytes, (__u64)offset);
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int cistern_ring_prep_write(struct cistern_ring *ring, int fd, const void *buf, unsigned nbytes,
                            uint64_t offset, uint64_t user_data) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring->ring);
    if (sqe == NULL) {
        return -EBUSY;
    }
    io_uring_prep_write(sqe, fd, buf, nbytes, (__u64)offset);
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int cistern_ring_prep_fsync(struct cistern_ring *ring, int fd, uint64_t user_data) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring->ring);
    if (sqe == NULL) {
        return -EBUSY;
    }
    io_uring_prep_fsync(sqe, fd, 0);
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int cistern_ring_prep_fallocate_keep_size(struct cistern_ring *ring, int fd, uint64_t offset,
                                          uint64_t length, uint64_t user_data) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring->ring);
    if (sqe == NULL) {
        return -EBUSY;
    }
    // liburing 2.3 puts the length in sqe->addr and the mode in sqe->len, as the
    // kernel expects for IORING_OP_FALLOCATE.
    io_uring_prep_fallocate(sqe, fd, FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length);
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int cistern_ring_submit_and_wait(struct cistern_ring *ring, unsigned wait_nr) {
    return io_uring_submit_and_wait(&ring->ring, wait_nr);
}

unsigned cistern_ring_peek(struct cistern_ring *ring, struct cistern_completion *out, unsigned max) {
    unsigned copied = 0;
    struct io_uring_cqe *cqes[64];
    while (copied < max) {
        unsigned want = max - copied;
        if (want > 64) {
            want = 64;
        }
        unsigned n = io_uring_peek_batch_cqe(&ring->ring, cqes, want);
        if (n == 0) {
            break;
        }
        for (unsigned i = 0; i < n; i++) {
            out[copied + i].user_data = io_uring_cqe_get_data64(cqes[i]);
            out[copied + i].res = cqes[i]->res;
        }
        io_uring_cq_advance(&ring->ring, n);
        copied += n;
    }
    return copied;
}

// MARK: Direct I/O helpers

int cistern_open_direct(const char *path, int create) {
    int flags = O_RDWR | O_DIRECT | O_CLOEXEC | (create ? O_CREAT : 0);
    int fd;
    do {
        fd = open(path, flags, 0644);
    } while (fd < 0 && errno == EINTR);
    return fd < 0 ? -errno : fd;
}

void *cistern_aligned_alloc(uint64_t alignment, uint64_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, (size_t)alignment, (size_t)bytes) != 0) {
        return NULL;
    }
    return p;
}

void cistern_aligned_free(void *pointer) { free(pointer); }

int cistern_ring_run_fixed_io(struct cistern_ring *ring, int fd, int is_write, void *buffers,
                              unsigned block_bytes, const uint64_t *offsets, unsigned count,
                              unsigned depth) {
    if (depth == 0 || depth > ring->entries) {
        return -EINVAL;
    }
    unsigned *free_slots = malloc(sizeof(unsigned) * depth);
    if (free_slots == NULL) {
        return -ENOMEM;
    }
    unsigned free_count = depth;
    for (unsigned k = 0; k < depth; k++) {
        free_slots[k] = depth - 1 - k;
    }
    unsigned next = 0, in_flight = 0;
    int failure = 0;
    struct io_uring_cqe *cqes[64];
    while ((next < count && failure == 0) || in_flight > 0) {
        while (failure == 0 && next < count && free_count > 0) {
            struct io_uring_sqe *sqe = io_uring_get_sqe(&ring->ring);
            if (sqe == NULL) {
                break;
            }
            unsigned slot = free_slots[--free_count];
            char *buffer = (char *)buffers + (size_t)slot * block_bytes;
            if (is_write) {
                io_uring_prep_write(sqe, fd, buffer, block_bytes, (__u64)offsets[next]);
            } else {
                io_uring_prep_read(sqe, fd, buffer, block_bytes, (__u64)offsets[next]);
            }
            io_uring_sqe_set_data64(sqe, slot);
            next++;
            in_flight++;
        }
        if (in_flight == 0) {
            break;
        }
        int rc = io_uring_submit_and_wait(&ring->ring, 1);
        if (rc == -EINTR) {
            continue;
        }
        if (rc < 0) {
            free(free_slots);
            return rc;
        }
        unsigned n;
        while ((n = io_uring_peek_batch_cqe(&ring->ring, cqes, 64)) > 0) {
            for (unsigned i = 0; i < n; i++) {
                int res = cqes[i]->res;
                if (res != (int)block_bytes && failure == 0) {
                    failure = res < 0 ? res : -EIO;
                }
                free_slots[free_count++] = (unsigned)io_uring_cqe_get_data64(cqes[i]);
            }
            io_uring_cq_advance(&ring->ring, n);
            in_flight -= n;
        }
    }
    free(free_slots);
    return failure;
}

int cistern_sync_run_fixed_io(int fd, int is_write, void *buffer, unsigned block_bytes,
                              const uint64_t *offsets, unsigned count) {
    for (unsigned i = 0; i < count; i++) {
        ssize_t n;
        do {
            n = is_write ? pwrite(fd, buffer, block_bytes, (off_t)offsets[i])
                      : pread(fd, buffer, block_bytes, (off_t)offsets[i]);
        } while (n < 0 && errno == EINTR);
        if (n < 0) {
            return -errno;
        }
        if (n != (ssize_t)block_bytes) {
            return -EIO;
        }
    }
    return 0;
}

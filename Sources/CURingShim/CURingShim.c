#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
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

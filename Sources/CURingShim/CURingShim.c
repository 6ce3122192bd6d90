#define _GNU_SOURCE
#include <fcntl.h>
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

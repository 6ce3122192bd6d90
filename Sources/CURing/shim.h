#ifndef CISTERN_CURING_SHIM_H
#define CISTERN_CURING_SHIM_H
// Glibc is imported without _GNU_SOURCE, which hides O_DIRECT from Swift: define it
// here and expose the value through a function (it differs between architectures).
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <liburing.h>

static inline int cistern_o_direct(void) { return O_DIRECT; }
#endif

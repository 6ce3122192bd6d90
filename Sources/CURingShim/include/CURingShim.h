#ifndef CISTERN_CURINGSHIM_H
#define CISTERN_CURINGSHIM_H

// Plain-C wrappers over liburing. Only standard C types cross this boundary, so
// Swift never sees a glibc struct compiled under liburing's feature macros.

/// Creates and destroys a ring of `entries` entries. Returns 0, or -errno.
int cistern_uring_probe(unsigned entries);

/// The platform's O_DIRECT open flag (it differs between architectures).
int cistern_o_direct(void);

#endif

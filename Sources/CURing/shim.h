#ifndef CISTERN_CURING_SHIM_H
#define CISTERN_CURING_SHIM_H
// This module only links liburing (and names the apt package that provides it).
// liburing.h itself is compiled in the CURingShim C target and never shown to
// Swift: it defines _XOPEN_SOURCE and _GNU_SOURCE before including glibc headers,
// which gives fd_set and friends a different layout than Swift's Glibc module has,
// and Clang then refuses to merge the two definitions.
#endif

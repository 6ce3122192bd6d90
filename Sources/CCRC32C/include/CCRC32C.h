// CRC-32C (Castagnoli) with the CPU's instruction: SSE4.2 `crc32` on x86_64, the
// ARMv8 CRC extension on aarch64. Chosen at run time; callers check
// `cistern_crc32c_hardware_available()` and fall back to software when it is 0.
#ifndef CISTERN_CCRC32C_H
#define CISTERN_CCRC32C_H

#include <stddef.h>
#include <stdint.h>

/// 1 when this CPU has a CRC-32C instruction the library can use, else 0.
int cistern_crc32c_hardware_available(void);

/// The CRC-32C of `length` bytes at `bytes`, continuing from `crc` (0 to start), in
/// the same convention as the software table (pre- and post-inverted). Only valid
/// when `cistern_crc32c_hardware_available()` returned 1.
uint32_t cistern_crc32c_hardware(uint32_t crc, const void *bytes, size_t length);

#endif

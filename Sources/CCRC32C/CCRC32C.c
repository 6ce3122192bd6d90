// Hardware CRC-32C. Each function carries its own target attribute so the package
// builds for the baseline ISA and the instruction is used only after a CPU check.
// Three independent streams hide the instruction's 3-cycle latency on blocks of
// 3 x 256 bytes; the streams are combined by multiplying by x^(8*256) mod P, done
// with a 32-bit carry-less multiply table built once (no PCLMUL needed).
#include "CCRC32C.h"
#include <string.h>

#define POLY 0x82F63B78u   /* reflected Castagnoli polynomial */
#define LANE 256u           /* bytes per stream in a 3-way block */

/* Multiply a (reflected) CRC value by x^(8*LANE) modulo P, via four byte tables. */
static uint32_t shift_table[4][256];
static int shift_ready;

static uint32_t gf2_multiply(uint32_t a, uint32_t b) {  /* reflected, mod P */
    uint32_t product = 0;
    for (int i = 0; i < 32; i++) {
        if (a & 0x80000000u) product ^= b;
        a <<= 1;
        b = (b & 1) ? (b >> 1) ^ POLY : b >> 1;
    }
    return product;
}

static uint32_t x_power_bits(uint64_t bits) {  /* x^bits mod P, reflected */
    uint32_t result = 0x80000000u;  /* x^0 */
    uint32_t square = 0x40000000u;  /* x^1 */
    while (bits) {
        if (bits & 1) result = gf2_multiply(result, square);
        square = gf2_multiply(square, square);
        bits >>= 1;
    }
    return result;
}

static void build_shift_table(void) {
    uint32_t factor = x_power_bits((uint64_t)LANE * 8);
    for (int byte = 0; byte < 4; byte++)
        for (uint32_t v = 0; v < 256; v++)
            shift_table[byte][v] = gf2_multiply(v << (8 * byte), factor);
    __atomic_store_n(&shift_ready, 1, __ATOMIC_RELEASE);
}

static inline uint32_t shift_lane(uint32_t crc) {
    return shift_table[0][crc & 0xff] ^ shift_table[1][(crc >> 8) & 0xff]
         ^ shift_table[2][(crc >> 16) & 0xff] ^ shift_table[3][crc >> 24];
}

/* Per CPU: the availability check and the byte and 8-byte instructions, each in a
 * function compiled for the instruction's target; one loop below uses them. */
#if defined(__x86_64__)
#include <cpuid.h>
#define HW_TARGET __attribute__((target("sse4.2")))

static int cpu_has_crc32c(void) {
    unsigned eax, ebx, ecx, edx;
    return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_SSE4_2);
}
static inline HW_TARGET uint32_t crc_byte(uint32_t c, unsigned char b) { return __builtin_ia32_crc32qi(c, b); }
static inline HW_TARGET uint32_t crc_word(uint32_t c, uint64_t w) { return (uint32_t)__builtin_ia32_crc32di(c, w); }

#elif defined(__aarch64__)
#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)
#endif
#define HW_TARGET __attribute__((target("crc")))

static int cpu_has_crc32c(void) { return (getauxval(AT_HWCAP) & HWCAP_CRC32) != 0; }
static inline HW_TARGET uint32_t crc_byte(uint32_t c, unsigned char b) { return __builtin_arm_crc32cb(c, b); }
static inline HW_TARGET uint32_t crc_word(uint32_t c, uint64_t w) { return __builtin_arm_crc32cd(c, w); }
#endif

#if defined(HW_TARGET)
int cistern_crc32c_hardware_available(void) {
    if (!cpu_has_crc32c()) return 0;
    if (!__atomic_load_n(&shift_ready, __ATOMIC_ACQUIRE)) build_shift_table();
    return 1;
}

HW_TARGET
uint32_t cistern_crc32c_hardware(uint32_t crc, const void *bytes, size_t length) {
    const unsigned char *p = bytes;
    uint32_t c0 = ~crc;
    while (length > 0 && ((uintptr_t)p & 7)) { c0 = crc_byte(c0, *p++); length--; }
    while (length >= 3 * LANE) {
        uint32_t c1 = 0, c2 = 0;
        for (size_t i = 0; i < LANE; i += 8) {
            uint64_t w0, w1, w2;
            memcpy(&w0, p + i, 8); memcpy(&w1, p + LANE + i, 8); memcpy(&w2, p + 2 * LANE + i, 8);
            c0 = crc_word(c0, w0);
            c1 = crc_word(c1, w1);
            c2 = crc_word(c2, w2);
        }
        c0 = shift_lane(c0) ^ c1;
        c0 = shift_lane(c0) ^ c2;
        p += 3 * LANE; length -= 3 * LANE;
    }
    while (length >= 8) { uint64_t w; memcpy(&w, p, 8); c0 = crc_word(c0, w); p += 8; length -= 8; }
    while (length > 0) { c0 = crc_byte(c0, *p++); length--; }
    return ~c0;
}

#else
int cistern_crc32c_hardware_available(void) { return 0; }
uint32_t cistern_crc32c_hardware(uint32_t crc, const void *bytes, size_t length) {
    (void)bytes; (void)length; return crc;
}
#endif

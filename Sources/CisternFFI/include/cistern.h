/*
 * libcistern: the C interface of the Cistern client (KV pages for inference engines).
 *
 * Stable ABI rules: functions are only added, never changed; structs passed out
 * start with a `size` field the caller sets to sizeof(struct), and the library fills
 * only the fields that fit, so an old caller keeps working with a newer library.
 *
 * Threads: every call blocks the calling thread only, until the cluster answers or
 * the store's timeout passes; any number of threads may call at once on the same
 * handles. The library runs its own event-loop threads, started by the first
 * cistern_connect in a process. Do not call from a signal handler.
 *
 * Memory: the library never keeps a caller's pointer past the call that got it.
 * batch_put_from reads the pages before it returns; batch_get_into writes them before
 * it returns, and never after a timeout.
 *
 * fork: the library's threads start with the first cistern_connect in a process and
 * do not survive fork. A handle used in a forked child, and any cistern_connect in a
 * child forked after its parent's first connect, fail with CISTERN_EFORK. Connect in
 * processes started fresh (multiprocessing "spawn") or forked before the first
 * connect (the Python package connects lazily, on first use, so a Store made but not
 * used before such a fork works in the child).
 *
 * Errors: a function returns CISTERN_OK (0) or a negative code; then
 * cistern_last_error() names the problem and the fix. Batch calls also report an
 * outcome per key.
 */
#ifndef CISTERN_H
#define CISTERN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CISTERN_ABI_VERSION 1

enum {
    CISTERN_OK = 0,
    CISTERN_EINVAL = -1,       /* a bad argument: NULL pointer, bad key, unknown handle */
    CISTERN_ENOTFOUND = -2,    /* no such key (never put, deleted or evicted) or namespace */
    CISTERN_EUNAVAILABLE = -3, /* the cluster did not answer in time */
    CISTERN_ETOOLARGE = -4,    /* a page above the namespace's page size, or too many keys */
    CISTERN_EFULL = -5,        /* no page slot free: every slot is reserved or being read */
    CISTERN_ECONFIG = -6,      /* the cluster description cannot be read or is wrong */
    CISTERN_EFORK = -7,        /* a handle used in a process forked after it was made */
    CISTERN_EIO = -8,          /* a page could not be written or read after retries */
    CISTERN_EMISMATCH = -9,    /* the namespace exists with another page size or capacity */
    CISTERN_ESMALL = -10,      /* a destination buffer is smaller than the stored page */
    CISTERN_EINTERNAL = -11,   /* a bug: please report it with cistern_last_error() */
    CISTERN_ENOSPACE = -12,    /* a replica's disk or the metadata store is full: free space or add storage */
    CISTERN_EPERM = -13        /* the token is missing, unknown or revoked, or its tenant may not use this */
};

/* Outcomes of one page in cistern_batch_put_from (negative values are error codes). */
enum {
    CISTERN_PUT_STORED = 0,  /* written and visible to readers */
    CISTERN_PUT_EXISTED = 1  /* the key was already stored: nothing written */
};

enum {
    CISTERN_DURABILITY_DEFAULT = 0, /* cache */
    CISTERN_DURABILITY_CACHE = 1,   /* no fsync before a put returns; a crash of a whole chain may lose recent pages, never mix them */
    CISTERN_DURABILITY_DURABLE = 2  /* every replica fsyncs before a put returns */
};

/* Batches hold at most this many keys; keys are 1...1024 bytes of UTF-8. */
#define CISTERN_BATCH_KEYS_MAX 1024
#define CISTERN_KEY_BYTES_MAX 1024

typedef struct cistern_store cistern_store; /* a connection to one cluster */
typedef struct cistern_ns cistern_ns;       /* an open KV namespace of a store */

typedef struct cistern_usage {
    uint64_t size;             /* set by the caller: sizeof(cistern_usage) */
    uint64_t capacity_pages;   /* slots the namespace may use */
    uint64_t stored_pages;     /* pages stored and readable */
    uint64_t reserved_pages;   /* slots being written now */
    uint64_t free_pages;       /* slots used before and free again */
    uint64_t high_water_pages; /* slots ever used */
    uint64_t page_bytes;       /* the namespace's page size */
    uint64_t durability;       /* CISTERN_DURABILITY_CACHE or _DURABLE */
} cistern_usage;

/* CISTERN_ABI_VERSION of the loaded library. */
int32_t cistern_abi_version(void);

/* The message of the last failed call on this thread ("" if none); valid until the
 * next call on this thread. */
const char *cistern_last_error(void);

/* A short name for a code ("CISTERN_ENOTFOUND"); a static string. */
const char *cistern_strerror(int32_t code);

/* Connects to a cluster. `cluster` is a path to a cluster.yaml, a data directory of
 * `cistern up` holding one, or "mgmtd=ID@HOST:PORT[,...];meta=ID@HOST:PORT[,...]".
 * `timeout_ms` bounds this call and is the default bound of every later call on the
 * store (0: 30000). Fails with CISTERN_EUNAVAILABLE if no cluster manager answers. */
int32_t cistern_connect(const char *cluster, int32_t timeout_ms, cistern_store **out);

/* Closes a store and every namespace opened through it. NULL is ignored. */
int32_t cistern_close(cistern_store *store);

/* Opens a namespace. With page_bytes = 0 it must exist; otherwise it is created with
 * that page size, capacity and durability if missing, and must have that shape if
 * it exists (CISTERN_EMISMATCH otherwise). */
int32_t cistern_ns_open(cistern_store *store, const char *name, uint32_t page_bytes,
                        uint64_t capacity_pages, int32_t durability, cistern_ns **out);

/* Releases a namespace handle (the namespace and its pages stay). NULL is ignored. */
int32_t cistern_ns_close(cistern_ns *ns);

/* Whether each key is stored: present[i] is 1 or 0 (present may be NULL), and
 * *hits (may be NULL) is the number of keys present in a row from the first. */
int32_t cistern_batch_exists(cistern_ns *ns, const char *const *keys, size_t count,
                             uint8_t *present, size_t *hits);

/* Stores count pages: page i is sizes[i] bytes at ptrs[i] under keys[i]. results[i]
 * is CISTERN_PUT_STORED, CISTERN_PUT_EXISTED or a negative code. Returns CISTERN_OK
 * if the batch ran (see results), else a negative code for the whole call. */
int32_t cistern_batch_put_from(cistern_ns *ns, const char *const *keys, const void *const *ptrs,
                               const size_t *sizes, size_t count, int32_t *results);

/* Reads count pages into the caller's buffers: keys[i] into sizes[i] bytes at
 * ptrs[i]. results[i] is the page's length in bytes, or CISTERN_ENOTFOUND,
 * CISTERN_ESMALL (nothing copied) or CISTERN_EIO. Returns CISTERN_OK if the batch
 * ran, else a negative code for the whole call. */
int32_t cistern_batch_get_into(cistern_ns *ns, const char *const *keys, void *const *ptrs,
                               const size_t *sizes, size_t count, int64_t *results);

/* Removes keys; *deleted (may be NULL) counts those that were stored. */
int32_t cistern_batch_delete(cistern_ns *ns, const char *const *keys, size_t count, size_t *deleted);

/* The namespace's usage; out->size must be set by the caller. */
int32_t cistern_ns_usage(cistern_ns *ns, cistern_usage *out);

#ifdef __cplusplus
}
#endif

#endif /* CISTERN_H */

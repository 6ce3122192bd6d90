/* The C ABI from C: bad arguments give codes and messages, then a batch round trip.
 * Usage: c_roundtrip CLUSTER NAMESPACE. Prints "ok" and exits 0 when every check holds. */
#include "cistern.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond, ...) do { if (!(cond)) { fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
    fprintf(stderr, __VA_ARGS__); fprintf(stderr, " (last error: %s)\n", cistern_last_error()); return 1; } } while (0)

enum { PAGES = 32, PAGE = 16384 };

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s CLUSTER NAMESPACE\n", argv[0]); return 2; }
    CHECK(cistern_abi_version() == CISTERN_ABI_VERSION, "abi version %d", cistern_abi_version());
    CHECK(strcmp(cistern_strerror(CISTERN_ENOTFOUND), "CISTERN_ENOTFOUND") == 0, "strerror");

    /* NULL everywhere: codes and messages, no crash. */
    cistern_store *store = NULL;
    CHECK(cistern_connect(NULL, 0, &store) == CISTERN_EINVAL, "connect(NULL)");
    CHECK(strstr(cistern_last_error(), "cluster is NULL") != NULL, "message for NULL cluster");
    CHECK(cistern_connect(argv[1], 0, NULL) == CISTERN_EINVAL, "connect(out NULL)");
    CHECK(cistern_connect("/no/such/cluster.yaml", 0, &store) == CISTERN_ECONFIG, "connect(missing file)");
    CHECK(strstr(cistern_last_error(), "no such file") != NULL, "message for a missing file");
    CHECK(cistern_connect("mgmtd=oops", 0, &store) == CISTERN_ECONFIG, "connect(bad spec)");
    CHECK(cistern_batch_exists(NULL, NULL, 0, NULL, NULL) == CISTERN_EINVAL, "exists(NULL ns)");
    CHECK(cistern_ns_usage((cistern_ns *)(uintptr_t)12345, NULL) == CISTERN_EINVAL, "usage(forged handle)");
    CHECK(strstr(cistern_last_error(), "unknown namespace handle") != NULL, "message for a forged handle");
    CHECK(cistern_close(NULL) == CISTERN_OK, "close(NULL)");
    CHECK(cistern_connect("meta=2@127.0.0.1:9;mgmtd=oops", 0, &store) == CISTERN_ECONFIG, "spec not starting with mgmtd=");
    CHECK(strstr(cistern_last_error(), "ID@HOST:PORT") != NULL, "message for a bad spec");

    CHECK(cistern_connect(argv[1], 20000, &store) == CISTERN_OK, "connect(%s)", argv[1]);
    cistern_ns *ns = NULL;
    CHECK(cistern_ns_open(store, "c-no-such-namespace", 0, 0, 0, &ns) == CISTERN_ENOTFOUND, "open missing namespace");
    CHECK(cistern_ns_open(store, argv[2], PAGE, 1024, CISTERN_DURABILITY_CACHE, &ns) == CISTERN_OK, "open namespace");
    CHECK(cistern_ns_open(store, argv[2], PAGE * 2, 1024, CISTERN_DURABILITY_CACHE, &(cistern_ns *){0}) == CISTERN_EMISMATCH, "open with another shape");

    const char *keys[PAGES];
    char names[PAGES][32];
    void *pages[PAGES];
    void *back[PAGES];
    size_t sizes[PAGES];
    for (int i = 0; i < PAGES; i++) {
        snprintf(names[i], sizeof names[i], "c-key-%d", i);
        keys[i] = names[i];
        pages[i] = malloc(PAGE);
        back[i] = calloc(1, PAGE);
        for (int b = 0; b < PAGE; b++) ((unsigned char *)pages[i])[b] = (unsigned char)(i * 31 + b * 7);
        sizes[i] = PAGE - (i % 3) * 100; /* short pages too */
    }
    /* A NULL page pointer and a NULL results array are refused before anything is stored. */
    int32_t put[PAGES];
    const void *bad[2] = {pages[0], NULL};
    CHECK(cistern_batch_put_from(ns, keys, bad, sizes, 2, put) == CISTERN_EINVAL, "put with a NULL page");
    CHECK(strstr(cistern_last_error(), "ptrs[1] is NULL") != NULL, "message names the NULL page");
    CHECK(cistern_batch_put_from(ns, keys, (const void *const *)pages, sizes, PAGES, NULL) == CISTERN_EINVAL, "put with NULL results");

    CHECK(cistern_batch_put_from(ns, keys, (const void *const *)pages, sizes, PAGES, put) == CISTERN_OK, "batch put");
    for (int i = 0; i < PAGES; i++) CHECK(put[i] == CISTERN_PUT_STORED, "put[%d] = %d", i, put[i]);
    CHECK(cistern_batch_put_from(ns, keys, (const void *const *)pages, sizes, PAGES, put) == CISTERN_OK, "batch put again");
    for (int i = 0; i < PAGES; i++) CHECK(put[i] == CISTERN_PUT_EXISTED, "second put[%d] = %d", i, put[i]);

    /* An oversized page is refused per key. */
    size_t big = PAGE + 1;
    const char *big_key = "c-too-big";
    void *big_page = calloc(1, big);
    CHECK(cistern_batch_put_from(ns, &big_key, (const void *const *)&big_page, &big, 1, put) == CISTERN_OK && put[0] == CISTERN_ETOOLARGE, "oversized page: %d", put[0]);
    CHECK(strstr(cistern_last_error(), "more than the namespace's page size") != NULL, "message for an oversized page");

    uint8_t present[PAGES + 1];
    size_t hits = 0;
    CHECK(cistern_batch_exists(ns, keys, (size_t)-1, present, &hits) == CISTERN_EINVAL, "a count of SIZE_MAX");
    CHECK(cistern_batch_put_from(ns, keys, (const void *const *)pages, sizes, (size_t)1 << 63, put) == CISTERN_EINVAL, "a count above INT64_MAX");
    const char *probe[PAGES + 1];
    for (int i = 0; i < PAGES; i++) probe[i] = keys[i];
    probe[PAGES] = "c-missing";
    CHECK(cistern_batch_exists(ns, probe, PAGES + 1, present, &hits) == CISTERN_OK, "exists");
    CHECK(hits == PAGES && present[0] == 1 && present[PAGES] == 0, "hits %zu", hits);

    int64_t got[PAGES];
    size_t room[PAGES];
    for (int i = 0; i < PAGES; i++) room[i] = PAGE;
    room[1] = 10; /* too small: refused, nothing copied */
    CHECK(cistern_batch_get_into(ns, keys, back, room, PAGES, got) == CISTERN_OK, "batch get");
    for (int i = 0; i < PAGES; i++) {
        if (i == 1) { CHECK(got[i] == CISTERN_ESMALL, "small buffer: %lld", (long long)got[i]); continue; }
        CHECK(got[i] == (int64_t)sizes[i], "got[%d] = %lld, want %zu", i, (long long)got[i], sizes[i]);
        CHECK(memcmp(back[i], pages[i], sizes[i]) == 0, "bytes of page %d differ", i);
    }
    int64_t missing;
    void *one = back[0];
    size_t one_size = PAGE;
    CHECK(cistern_batch_get_into(ns, &probe[PAGES], &one, &one_size, 1, &missing) == CISTERN_OK && missing == CISTERN_ENOTFOUND, "missing key: %lld", (long long)missing);

    cistern_usage u;
    memset(&u, 0, sizeof u);
    u.size = sizeof u;
    CHECK(cistern_ns_usage(ns, &u) == CISTERN_OK, "usage");
    CHECK(u.page_bytes == PAGE && u.capacity_pages == 1024 && u.stored_pages >= PAGES && u.durability == CISTERN_DURABILITY_CACHE, "usage fields");

    size_t deleted = 0;
    CHECK(cistern_batch_delete(ns, keys, PAGES, &deleted) == CISTERN_OK && deleted == PAGES, "delete: %zu", deleted);
    CHECK(cistern_ns_close(ns) == CISTERN_OK, "ns close");
    CHECK(cistern_ns_close(ns) == CISTERN_EINVAL, "ns closed twice");
    CHECK(cistern_close(store) == CISTERN_OK, "close");
    CHECK(cistern_batch_exists(ns, keys, 1, present, &hits) == CISTERN_EINVAL, "use after close");
    puts("ok");
    return 0;
}

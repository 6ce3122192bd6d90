#ifndef CISTERN_CFUSE_SHIM_H
#define CISTERN_CFUSE_SHIM_H
// libfuse 3's low-level API (Debian `libfuse3-dev`), at API version 3.12, and
// wrappers for what Swift cannot call directly (macros that pick a versioned symbol).
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <errno.h>
#include <stddef.h>

/// A session for `mountpoint` options `argv` (argv[0] is the program name).
static inline struct fuse_session *cistern_fuse_session_new(int argc, char **argv, const struct fuse_lowlevel_ops *ops, void *userdata) {
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    struct fuse_session *se = fuse_session_new(&args, ops, sizeof(*ops), userdata);
    fuse_opt_free_args(&args);
    return se;
}

/// Serves requests on up to `threads` threads (each with its own /dev/fuse clone)
/// until the file system is unmounted or the session told to exit.
static inline int cistern_fuse_loop(struct fuse_session *se, unsigned threads) {
    struct fuse_loop_config *config = fuse_loop_cfg_create();
    if (config == NULL) return -ENOMEM;
    fuse_loop_cfg_set_clone_fd(config, 1);
    fuse_loop_cfg_set_max_threads(config, threads);
    fuse_loop_cfg_set_idle_threads(config, threads);
    int rc = fuse_session_loop_mt(se, config);
    fuse_loop_cfg_destroy(config);
    return rc;
}

/// The `want` capability bits the mount asks for, when the kernel offers them.
static inline void cistern_fuse_want(struct fuse_conn_info *conn, unsigned bits) {
    conn->want |= (conn->capable & bits);
}
#endif

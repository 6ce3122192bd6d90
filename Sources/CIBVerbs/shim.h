#ifndef CISTERN_CIBVERBS_SHIM_H
#define CISTERN_CIBVERBS_SHIM_H
#include <infiniband/verbs.h>

// ibv_query_port is a macro over ibv_query_port's real entry point: wrap it so Swift can call it.
static inline int cistern_ibv_query_port(struct ibv_context *context, uint8_t port, struct ibv_port_attr *attr) {
    return ibv_query_port(context, port, attr);
}
#endif

#ifndef CISTERN_CIBVERBS_SHIM_H
#define CISTERN_CIBVERBS_SHIM_H
#include <errno.h>
#include <string.h>
#include <infiniband/verbs.h>

// libibverbs implements its data-path calls (post, poll, notify) and a few setup
// calls as static inline functions or macros, which Swift cannot call. Each
// wrapper below is a plain static inline function with the `cistern_` prefix.
// Wrappers that return an int return 0 on success and an errno value on failure
// (the verbs convention), unless their comment says otherwise.

// ibv_query_port is a macro over ibv_query_port's real entry point: wrap it so Swift can call it.
static inline int cistern_ibv_query_port(struct ibv_context *context, uint8_t port, struct ibv_port_attr *attr) {
    return ibv_query_port(context, port, attr);
}

// ibv_reg_mr is a macro (it picks ibv_reg_mr_iova2 for some access flags). NULL and
// errno set on failure.
static inline struct ibv_mr *cistern_ibv_reg_mr(struct ibv_pd *pd, void *addr, size_t length, int access) {
    return ibv_reg_mr(pd, addr, length, access);
}

// ibv_poll_cq: the number of completions written to `wc` (0 when none), negative on error.
static inline int cistern_ibv_poll_cq(struct ibv_cq *cq, int num_entries, struct ibv_wc *wc) {
    return ibv_poll_cq(cq, num_entries, wc);
}

static inline int cistern_ibv_req_notify_cq(struct ibv_cq *cq, int solicited_only) {
    return ibv_req_notify_cq(cq, solicited_only);
}

static inline int cistern_ibv_post_send(struct ibv_qp *qp, struct ibv_send_wr *wr, struct ibv_send_wr **bad_wr) {
    return ibv_post_send(qp, wr, bad_wr);
}

static inline int cistern_ibv_post_recv(struct ibv_qp *qp, struct ibv_recv_wr *wr, struct ibv_recv_wr **bad_wr) {
    return ibv_post_recv(qp, wr, bad_wr);
}

// Posts one signaled RDMA READ (`is_read` != 0) or RDMA WRITE of `length` bytes
// between local memory [local_addr, local_addr + length) (registered, `lkey`) and
// remote memory at `remote_addr` (registered on the peer, `rkey`). The work request
// completes on the QP's send CQ with `wr_id`.
static inline int cistern_post_rdma(struct ibv_qp *qp, uint64_t wr_id, int is_read, uint64_t local_addr,
                                    uint32_t length, uint32_t lkey, uint64_t remote_addr, uint32_t rkey) {
    struct ibv_sge sge;
    struct ibv_send_wr wr;
    struct ibv_send_wr *bad = NULL;
    memset(&sge, 0, sizeof(sge));
    memset(&wr, 0, sizeof(wr));
    sge.addr = local_addr;
    sge.length = length;
    sge.lkey = lkey;
    wr.wr_id = wr_id;
    wr.sg_list = &sge;
    wr.num_sge = 1;
    wr.opcode = is_read ? IBV_WR_RDMA_READ : IBV_WR_RDMA_WRITE;
    wr.send_flags = IBV_SEND_SIGNALED;
    wr.wr.rdma.remote_addr = remote_addr;
    wr.wr.rdma.rkey = rkey;
    return ibv_post_send(qp, &wr, &bad);
}

// Creates a reliable-connected QP on `pd` whose send and receive completions go to
// `cq`; every send work request must ask for its own completion. NULL and errno set
// on failure.
static inline struct ibv_qp *cistern_create_rc_qp(struct ibv_pd *pd, struct ibv_cq *cq, uint32_t max_send_wr,
                                                  uint32_t max_recv_wr) {
    struct ibv_qp_init_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.send_cq = cq;
    attr.recv_cq = cq;
    attr.qp_type = IBV_QPT_RC;
    attr.sq_sig_all = 0;
    attr.cap.max_send_wr = max_send_wr;
    attr.cap.max_recv_wr = max_recv_wr;
    attr.cap.max_send_sge = 1;
    attr.cap.max_recv_sge = 1;
    return ibv_create_qp(pd, &attr);
}

// RESET -> INIT: bound to `port`, accepting the remote operations in `access_flags`
// (IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE for a QP that peers read and write through).
static inline int cistern_qp_to_init(struct ibv_qp *qp, uint8_t port, int access_flags) {
    struct ibv_qp_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.qp_state = IBV_QPS_INIT;
    attr.pkey_index = 0;
    attr.port_num = port;
    attr.qp_access_flags = (unsigned int)access_flags;
    return ibv_modify_qp(qp, &attr, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
}

// INIT -> RTR: connects to the remote QP `dest_qpn` whose first packet sequence
// number is `rq_psn`. The path goes to `dlid`, or through a global route to the
// 16-byte `dgid` when `use_grh` is set (RoCE, or InfiniBand across subnets), sent
// from local GID table entry `sgid_index`. `max_dest_rd_atomic`: RDMA READs the
// peer may have outstanding against this QP.
static inline int cistern_qp_to_rtr(struct ibv_qp *qp, uint8_t port, int path_mtu, uint32_t dest_qpn,
                                    uint32_t rq_psn, uint16_t dlid, const uint8_t *dgid, int use_grh,
                                    uint8_t sgid_index, uint8_t max_dest_rd_atomic) {
    struct ibv_qp_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.qp_state = IBV_QPS_RTR;
    attr.path_mtu = (enum ibv_mtu)path_mtu;
    attr.dest_qp_num = dest_qpn;
    attr.rq_psn = rq_psn;
    attr.max_dest_rd_atomic = max_dest_rd_atomic;
    attr.min_rnr_timer = 12;
    attr.ah_attr.dlid = dlid;
    attr.ah_attr.sl = 0;
    attr.ah_attr.src_path_bits = 0;
    attr.ah_attr.port_num = port;
    if (use_grh) {
        attr.ah_attr.is_global = 1;
        memcpy(attr.ah_attr.grh.dgid.raw, dgid, 16);
        attr.ah_attr.grh.sgid_index = sgid_index;
        attr.ah_attr.grh.hop_limit = 64;
        attr.ah_attr.grh.flow_label = 0;
        attr.ah_attr.grh.traffic_class = 0;
    }
    return ibv_modify_qp(qp, &attr,
                         IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                             IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
}

// RTR -> RTS: sends from packet sequence number `sq_psn` with at most
// `max_rd_atomic` RDMA READs outstanding. Local ACK timeout 14 (4.096 us * 2^14,
// about 67 ms) and 7 retries bound how long a work request to a dead peer takes to fail.
static inline int cistern_qp_to_rts(struct ibv_qp *qp, uint32_t sq_psn, uint8_t max_rd_atomic) {
    struct ibv_qp_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.qp_state = IBV_QPS_RTS;
    attr.timeout = 14;
    attr.retry_cnt = 7;
    attr.rnr_retry = 7;
    attr.sq_psn = sq_psn;
    attr.max_rd_atomic = max_rd_atomic;
    return ibv_modify_qp(qp, &attr,
                         IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
                             IBV_QP_MAX_QP_RD_ATOMIC);
}

// Any state -> ERR: outstanding work requests complete with IBV_WC_WR_FLUSH_ERR.
static inline int cistern_qp_to_error(struct ibv_qp *qp) {
    struct ibv_qp_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.qp_state = IBV_QPS_ERR;
    return ibv_modify_qp(qp, &attr, IBV_QP_STATE);
}

// Copies GID table entry `index` of `port` into the 16 bytes at `out`.
static inline int cistern_query_gid(struct ibv_context *context, uint8_t port, int index, uint8_t *out) {
    union ibv_gid gid;
    int rc = ibv_query_gid(context, port, index, &gid);
    if (rc != 0) return rc < 0 ? (errno != 0 ? errno : EINVAL) : rc;
    memcpy(out, gid.raw, 16);
    return 0;
}

// The file descriptor of a completion channel (to wait for its events with poll(2)).
static inline int cistern_comp_channel_fd(struct ibv_comp_channel *channel) {
    return channel->fd;
}

// The number libibverbs gave a QP.
static inline uint32_t cistern_qp_num(struct ibv_qp *qp) {
    return qp->qp_num;
}

// The keys and address of a registered memory region.
static inline uint32_t cistern_mr_lkey(struct ibv_mr *mr) { return mr->lkey; }
static inline uint32_t cistern_mr_rkey(struct ibv_mr *mr) { return mr->rkey; }
#endif

/* What every stage of the firewall of one packet shares: read once per packet. */
#ifndef NLAB_FWCTX_H
#define NLAB_FWCTX_H

#include "abi/fw.h"
#include "flow.h"

struct fw_ctx {
    struct __sk_buff *skb;
    struct flow *f;
    const struct nlab_fw_config *cfg;
    /* bpf_ktime_get_coarse_ns(): the tick clock (one jiffy) is plenty for timeouts of seconds
     * and cheaper than bpf_ktime_get_ns(), which reads the clock source */
    __u64 now;
    __u16 endpoint;
    __u8 dir;  /* NLAB_FW_OUT or NLAB_FW_IN */
    __u32 rule;
};

#endif

// Smoke test for the toolchain: the smallest TC (cls_bpf, direct-action) program.
// scripts/check_bcc.py compiles and loads it; it is never attached to any interface.
#include <linux/pkt_cls.h>

int smoke_pass(struct __sk_buff *skb)
{
    return TC_ACT_OK;
}

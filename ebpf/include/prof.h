/* Benchmark-only switches: -DNLAB_PROF_SKIP=<mask of NLAB_PROF_*> leaves parts of the VM-port
 * path out, so that tests/bench/fwprofile.py can tell what each part costs by difference. A
 * dataplane built with any of them is wrong (it skips counters, state or checks): only that
 * script sets the mask, in objects it never attaches. 0 (the default) compiles every test away. */
#ifndef NLAB_PROF_H
#define NLAB_PROF_H

#ifndef NLAB_PROF_SKIP
#define NLAB_PROF_SKIP 0
#endif

#define NLAB_PROF_MIRROR   0x01  /* mirror_enter and the taps */
#define NLAB_PROF_COUNTERS 0x02  /* the per-port verdict counter */
#define NLAB_PROF_CLOCK    0x04  /* bpf_ktime_get_coarse_ns (now = 1) */
#define NLAB_PROF_CT       0x08  /* the connection lookup: every packet is "new" */
#define NLAB_PROF_POLICY   0x10  /* the policy lookup: allowed by rule 1 */
#define NLAB_PROF_EVENT    0x20  /* the ring buffer event */
#define NLAB_PROF_CT_NEW   0x40  /* the connection insert and its quota */
#define NLAB_PROF_RULEHIT  0x80  /* the rule hit counter */
#define NLAB_PROF_PORTSEC  0x100 /* port security's address check */
#define NLAB_PROF_CACHE    0x200 /* the flow cache (lookup and fill) */

#define PROF_SKIP(part) (NLAB_PROF_SKIP & (part))

#endif

/* The ABI shared by the eBPF programs and user space, one header per feature under abi/, each
 * mirrored by the module of the same name in dataplane/abi/. tests/bpf/test_abi.py checks that both
 * sides agree on every value and struct layout, and that no header defines what Python lacks:
 * change both together. */
#ifndef NLAB_ABI_H
#define NLAB_ABI_H

#include "abi/reasons.h"
#include "abi/port.h"
#include "abi/fw.h"
#include "abi/mirror.h"
#include "abi/team.h"
#include "abi/overlay.h"

#endif

"""Capacities of the dataplane's tables that a topology is checked against.

They are the sizes the eBPF programs are compiled with (``dataplane.abi`` mirrors them from
the C headers); they are repeated here so that validating a file never loads the kernel side.
A unit test keeps the two in step.
"""

CT_SIZE = 65536  # connection-tracking entries of one hypervisor's table
MAX_MIRRORS = 64  # mirror session ids, 0 unused
MIRROR_PER_PORT = 8  # sessions one port can be the source of

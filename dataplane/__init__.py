"""Kernel side of the dataplane: loading, attaching and reading eBPF programs. Knows ports, not topologies."""

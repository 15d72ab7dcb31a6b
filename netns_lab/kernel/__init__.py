"""The few modules that touch the kernel: namespaces and netlink."""

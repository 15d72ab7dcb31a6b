"""netns-lab: virtual-network security lab on namespaces and eBPF."""

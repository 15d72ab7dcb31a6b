"""Names of the kernel objects a lab creates, derived in one place so that the builder,
teardown and status always agree on them."""

MIRROR_PORT = ("mirror0", "mirror1")  # a hypervisor's mirror port: copies to truncate go in, out

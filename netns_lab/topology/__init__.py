"""The topology: what a lab file declares, read, converted and checked without the kernel.

Nothing in this package imports ``dataplane`` or anything that opens a socket, loads a
program or reads the running system: ``nlab validate`` and ``nlab graph FILE`` run on a
machine without bcc or libbpf.
"""

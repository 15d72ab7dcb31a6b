"""The VXLAN overlay: segments across hosts, their tables, and who fills them."""

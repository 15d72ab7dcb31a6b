"""The VXLAN overlay: segments of tenants across hosts, carried by VTEPs over an IP underlay."""

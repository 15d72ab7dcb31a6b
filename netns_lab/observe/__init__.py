"""Seeing what the dataplane does: capture, packet decoding, `nlab watch`, `nlab trace`, probes
and the topology drawing. Diagnostics here never leave marks in the real dataplane."""

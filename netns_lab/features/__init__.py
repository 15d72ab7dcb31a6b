"""The lab's capabilities, one package each, with one contract (`base.Feature`).

A feature's sections of the topology file are converted and validated in the pure topology
package (so `nlab validate` never loads a kernel side); the feature package holds the rest: its
plan (pure: what each node's dataplane must hold), its install at build time and on a running
lab, and its own checks. `registry.FEATURES` lists them in the order the builder and a live
change run them; a new capability is one package plus one line there.
"""

"""The lab's features, one package each: what they plan from the topology, install, and check."""

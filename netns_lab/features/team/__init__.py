"""NIC teaming (NIST SP 800-125B section 3): the plan of each host's teams, failure detection,
the monitor process that fails over, and the VM-MP-R1..R3 checks."""

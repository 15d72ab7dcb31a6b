"""Live migration of a VM between hosts (NIST 4.3: rules and connection state follow the VM):
`nlab migrate VM HOST`.

    plan.py       pure: where each NIC lands, refusals, the subnet-level protection it loses
    conntrack.py  the VM's connection entries carried between hosts' tables, quota included
    live.py       the phases on a running lab, with rollback
    events.py     one event per phase (`nlab watch`)

Not a registry feature: it has no build-time part, and its live part is one RunningLab change
between kernel steps only it makes (a port moved between host namespaces).
"""

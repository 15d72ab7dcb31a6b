"""A lab's life: the builder (a step runner the features feed), the running-lab object that
carries one live change as one transaction, the state files, teardown, status and the lab's own
processes (sweepers, the event hub)."""

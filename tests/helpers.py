"""Small helpers several test modules share: `nlab` as a user runs it (NLAB_LAB as chosen), and
the messages a topology text is refused with."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from netns_lab.topology.errors import TopologyError
from netns_lab.topology.loader import load_text

REPO = Path(__file__).resolve().parents[1]


def nlab(*args: str, env_lab: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m netns_lab ARGS` from the checkout, NLAB_LAB set to `env_lab` (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k != "NLAB_LAB"}
    if env_lab is not None:
        env["NLAB_LAB"] = env_lab
    return subprocess.run(
        [sys.executable, "-m", "netns_lab", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=timeout,
        check=False,
    )


def load_errors(text: str) -> set[str]:
    """The messages `text` (as file lab.yaml) is refused with; fails the test if it loads."""
    with pytest.raises(TopologyError) as caught:
        load_text(text, "lab.yaml")
    return {str(issue) for issue in caught.value.errors}

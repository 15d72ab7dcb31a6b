"""The ABI of ebpf/include/abi/ in Python, one module per header (`reasons`, `port`, `fw`,
`mirror`, `team`, `overlay`), all re-exported here: `from dataplane import abi; abi.Reason.POLICY`.

tests/bpf/test_abi.py checks every value and struct layout against the header of the same name,
and that no header defines a value or struct its module lacks.
"""

from __future__ import annotations

from dataplane.abi.fw import *  # noqa: F403
from dataplane.abi.mirror import *  # noqa: F403
from dataplane.abi.overlay import *  # noqa: F403
from dataplane.abi.port import *  # noqa: F403
from dataplane.abi.reasons import *  # noqa: F403
from dataplane.abi.team import *  # noqa: F403

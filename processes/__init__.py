"""The one way Floodgate runs a child process: spawn it, wait for it to say it is ready, stop
it within a deadline (SIGTERM, then SIGKILL), and restart it under one restart policy.

Used by every part that starts processes: `floodgate run`'s supervisor (store, receiver,
API), a receiver host's worker processes, and the API's render and the receiver's
verification workers (killable workers for work a sender controls). It imports nothing of
Floodgate's own, so any part may use it.
"""

from processes.budget import RESTART_POLICY, RestartBudget, RestartPolicy
from processes.child import spawn, stop, stop_all
from processes.framed import FramedChild, ProcessGone

__all__ = [
    "RESTART_POLICY",
    "FramedChild",
    "ProcessGone",
    "RestartBudget",
    "RestartPolicy",
    "spawn",
    "stop",
    "stop_all",
]

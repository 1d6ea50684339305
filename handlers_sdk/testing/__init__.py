"""A toolkit for people who write handlers: run, crash-test and replay them in process.

* `LocalRuntime`: runs handlers in process on the proxy's own state machine over an in-memory
  store (no proxy, no network, a `FakeClock` for timers and retries).
* `check_replay_safety`: crashes the handler after every step's side effect and before its ack,
  resumes it, and checks the output and that no journaled step ran again.
* `replay_journal`: replays a journal exported by the proxy (``GET /invocations/{id}/journal``)
  against today's code; ``python -m handlers_sdk replay journal.json module:app`` on the CLI.

pytest users get the ``replay_safety`` and ``local_runtime`` fixtures from
``handlers_sdk.testing.pytest_plugin``, registered as a pytest plugin when the package is installed
(else ``pytest -p handlers_sdk.testing.pytest_plugin``, or import them in a conftest). Nothing here imports pytest.
"""

from __future__ import annotations

from handlers_sdk.clock import FakeClock
from handlers_sdk.testing.completers import CommitHook, Completer, Completion
from handlers_sdk.testing.crash import (
    ReplaySafetyError,
    ReplaySafetyReport,
    Violation,
    check_replay_safety,
    check_replay_safety_async,
)
from handlers_sdk.testing.invocation import (
    AttemptFailedError,
    Invocation,
    InvocationPausedError,
    InvocationSuspendedError,
)
from handlers_sdk.testing.replayer import JournalExport, ReplayReport, load_export, replay_journal
from handlers_sdk.testing.runtime import LocalRuntime
from handlers_sdk.testing.steps import StepCall, StepExecution

__all__ = [
    "AttemptFailedError",
    "CommitHook",
    "Completer",
    "Completion",
    "FakeClock",
    "Invocation",
    "InvocationPausedError",
    "InvocationSuspendedError",
    "JournalExport",
    "LocalRuntime",
    "ReplayReport",
    "ReplaySafetyError",
    "ReplaySafetyReport",
    "StepCall",
    "StepExecution",
    "Violation",
    "check_replay_safety",
    "check_replay_safety_async",
    "load_export",
    "replay_journal",
]

"""Named crash points for the acceptance tests; inert unless ``PROXY_FAULTS`` arms them.

``PROXY_FAULTS=writer.after_commit:3,ingress.before_commit:1`` makes the third pass through
``writer.after_commit`` (and the first through ``ingress.before_commit``) end the process at once
with ``os._exit(137)``, as a SIGKILL would.
"""

from __future__ import annotations

import os
import sys

__all__ = ["POINTS", "hit"]

POINTS = (
    "ingress.before_commit",
    "writer.before_commit",
    "writer.after_commit",
    "callbacks.before_response",
    "invoker.after_send",
    "timers.after_fire",
)


def _parse(spec: str) -> dict[str, int]:
    armed: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, count = part.partition(":")
        if name not in POINTS:
            raise ValueError(f"unknown fault point {name!r}; known: {', '.join(POINTS)}")
        armed[name] = int(count or "1")
    return armed


_armed = _parse(os.environ.get("PROXY_FAULTS", ""))


def hit(point: str) -> None:
    """Pass a crash point: exits the process if it is armed and this is the chosen pass."""
    if not _armed:
        return
    remaining = _armed.get(point)
    if remaining is None:
        return
    remaining -= 1
    _armed[point] = remaining
    if remaining == 0:
        sys.stderr.write(f"fault point {point} reached: exiting\n")
        sys.stderr.flush()
        os._exit(137)

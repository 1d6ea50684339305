"""The running proxy: the `Runtime` use cases, the `Invoker` that sends attempts over HTTP, the
timer loop, the retention sweeper, the registry, transports, map residency and metrics. It
carries out the effects of the state machine (`durable_core`); it decides nothing durable."""

from __future__ import annotations

__all__: list[str] = []

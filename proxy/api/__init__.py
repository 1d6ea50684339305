"""The proxy's HTTP floor: the ingress (Restate's paths), the admin API, the step-ack endpoint and
the web page. Parses, validates and answers; every use case is the engine's (`proxy.engine`)."""

from __future__ import annotations

__all__: list[str] = []

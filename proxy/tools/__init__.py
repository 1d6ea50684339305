"""Operator tools, outside the server's import graph: the command line (`cli`, text rendering in
`render`) and dev mode (`dev`). They talk to a running proxy over HTTP."""

from __future__ import annotations

__all__: list[str] = []

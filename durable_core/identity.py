"""The proxy's signing key when the store holds it (PostgreSQL: every proxy of a database signs
with the same key, so the key lives where they all read).

One row in ``meta``; the first proxy to start writes it, in a writer transaction, and every later
start reads the same bytes. The value is the private key (PEM): never read it anywhere else.
"""

from __future__ import annotations

from durable_core.txn import Txn

__all__ = ["stored_signing_key"]

_SIGNING_KEY_ROW = b"signing_key"


def stored_signing_key(txn: Txn, candidate: bytes) -> tuple[bytes, bool]:
    """The signing key in the store; `candidate` is stored first if there is none.

    Returns:
        The stored key, and True if it is `candidate` (just written).
    """
    stored = txn.get("meta", _SIGNING_KEY_ROW)
    if stored is not None:
        return stored, False
    txn.put("meta", _SIGNING_KEY_ROW, candidate)
    return candidate, True

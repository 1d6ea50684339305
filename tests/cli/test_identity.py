"""``python -m proxy identity new-key FILE``: a signing key for a rotation, made locally (the admin
API never sees a private key); ``identity`` itself against a real proxy is in
tests/e2e/test_signed_invocations.py."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

from proxy.engine.identity import load_private_key, public_key_of
from proxy.tools.cli import EXIT_OK, EXIT_USAGE, main


def test_new_key_writes_an_owner_only_key_and_prints_its_public_key(tmp_path: Path) -> None:
    path = tmp_path / "next.pem"
    out = io.StringIO()
    assert main(["identity", "new-key", str(path)], out=out) == EXIT_OK
    public_key, note = out.getvalue().splitlines()
    assert public_key == public_key_of(load_private_key(path.read_bytes(), str(path)))
    assert note == f"wrote the private key to {path} (mode 0600)"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().splitlines()[1] not in out.getvalue()

    as_json = io.StringIO()
    other = tmp_path / "other.pem"
    assert main(["identity", "new-key", str(other), "--json"], out=as_json) == EXIT_OK
    shown = json.loads(as_json.getvalue())
    assert shown == {"public_key": public_key_of(load_private_key(other.read_bytes(), "")), "key_file": str(other)}
    assert shown["public_key"] != public_key


def test_new_key_never_overwrites_a_file(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_text("the current key")
    assert main(["identity", "new-key", str(path)], out=io.StringIO()) == EXIT_USAGE
    assert path.read_text() == "the current key"
    assert main(["identity", "new-key", str(tmp_path / "no-such-dir" / "k.pem")], out=io.StringIO()) == EXIT_USAGE

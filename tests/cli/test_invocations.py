"""``python -m proxy invocations|services|deployments`` against a real proxy and handler."""

from __future__ import annotations

import json

from tests.cli.helpers import Stack, cli, fields, table
from tests.e2e.harness import free_port, poll


def test_ls_hides_completed_unless_asked(stack: Stack) -> None:
    proxy = stack.proxy
    done = proxy.call("Child/work", 3)
    assert done.status_code == 200, done.text
    done_id = done.headers["x-restate-id"]
    sleeping = proxy.send("Sleeper/nap", {"seconds": 300})
    proxy.wait_status(sleeping, "suspended")

    result = stack.cli("invocations", "ls")
    assert result.code == 0, result.err
    rows = table(result.out)
    assert [r["ID"] for r in rows] == [sleeping]
    assert rows[0]["TARGET"] == "Sleeper/nap"
    assert rows[0]["STATUS"] == "suspended"
    assert rows[0]["ATTEMPT/RETRIES"] == "1/0"
    assert rows[0]["INFO"].startswith("waiting on timer in 4m")
    assert done_id not in result.out

    every = stack.cli("invocations", "ls", "--all")
    assert every.code == 0, every.err
    by_id = {r["ID"]: r for r in table(every.out)}
    assert set(by_id) == {done_id, sleeping}
    assert by_id[done_id]["STATUS"] == "completed"
    assert by_id[done_id]["INFO"] == "ok: 6"

    completed = stack.cli("inv", "ls", "--status", "completed")
    assert [r["ID"] for r in table(completed.out)] == [done_id]

    filtered = stack.cli("invocations", "ls", "--all", "--service", "Sleeper", "--handler", "nap")
    assert [r["ID"] for r in table(filtered.out)] == [sleeping]
    nothing = stack.cli("invocations", "ls", "--service", "Child")
    assert nothing.code == 0
    assert nothing.out.startswith("no invocations in flight")

    raw = stack.cli("invocations", "ls", "--all", "--json")
    data = json.loads(raw.out)
    assert {v["id"] for v in data["invocations"]} == {done_id, sleeping}
    assert data["next"] is None


def test_ls_pages(stack: Stack) -> None:
    proxy = stack.proxy
    ids = [proxy.send("Sleeper/nap", {"seconds": 300, "ledger": False}) for _ in range(5)]
    for inv_id in ids:
        proxy.wait_status(inv_id, "suspended")
    for first, cursor, want in (
        (["--oldest-first"], "--after", ids),  # creation order, each once
        ([], "--before", ids[::-1]),  # the default: newest first, each once
    ):
        seen: list[str] = []
        args = ["invocations", "ls", "--limit", "2", *first]
        pages = 0
        while True:
            result = stack.cli(*args)
            assert result.code == 0, result.err
            rows = table(result.out)
            assert len(rows) <= 2
            seen += [r["ID"] for r in rows]
            pages += 1
            more = [line for line in result.out.splitlines() if line.startswith(f"more: add {cursor} ")]
            if not more:
                break
            args = ["invocations", "ls", "--limit", "2", cursor, more[0].split()[-1]]
        assert seen == want
        assert pages == 3
    assert cli("invocations", "ls", "--before", ids[0], "--after", ids[1], admin=stack.proxy.admin).code == 2


def test_show_prints_the_journal(stack: Stack) -> None:
    proxy = stack.proxy
    inv_id = proxy.send("Sleeper/nap", {"seconds": 300})
    proxy.wait_status(inv_id, "suspended")

    result = stack.cli("invocations", "show", inv_id)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == f"id:          {inv_id}"  # values aligned after the longest name
    shown = fields(result.out)
    assert shown["target"] == "Sleeper/nap"
    assert shown["status"] == "suspended"
    assert shown["attempt"] == "1 (retries 0)"
    assert shown["waiting on"].startswith("timer in 4m")
    assert "journal (2 entries):" in lines
    journal = lines[lines.index("journal (2 entries):") + 1 :]
    assert journal[0].startswith("  0. run 'before' = {\"idx\":0,")
    assert journal[1].startswith("  1. sleep until ")
    assert journal[1].endswith(")") and "(in 4m" in journal[1]

    raw = stack.cli("invocations", "show", inv_id, "--json")
    view = json.loads(raw.out)
    assert view["id"] == inv_id
    assert [item["entry"]["type"] for item in view["journal"]] == ["run", "sleep"]

    failed = proxy.call("Child/work", -1)
    assert failed.status_code == 422
    shown = fields(stack.cli("invocations", "show", failed.headers["x-restate-id"]).out)
    assert shown["status"] == "completed"
    assert shown["failure"] == "422 negative input -1"

    missing = stack.cli("invocations", "show", "inv_nope")
    assert missing.code == 1
    assert missing.out == ""
    assert missing.err.strip() == "error: 404 not_found: invocation 'inv_nope' not found"


def test_actions_print_the_new_status(stack: Stack) -> None:
    proxy = stack.proxy
    inv_id = proxy.send("Sleeper/nap", {"seconds": 300})
    proxy.wait_status(inv_id, "suspended")

    paused = stack.cli("invocations", "pause", inv_id)
    assert (paused.code, paused.out) == (0, f"{inv_id}  paused\n"), paused.err
    again = stack.cli("invocations", "pause", inv_id)
    assert again.code == 1
    assert again.err.startswith(f"error: pause {inv_id}: 409 conflict: ")
    listed = table(stack.cli("invocations", "ls").out)
    assert listed[0]["STATUS"] == "paused"
    assert listed[0]["INFO"] == "last failure: paused by an operator"

    resumed = stack.cli("invocations", "resume", inv_id, "--latest")
    assert resumed.code == 0, resumed.err
    assert resumed.out.split()[0] == inv_id
    assert resumed.out.split()[1] in ("running", "suspended")
    proxy.wait_status(inv_id, "suspended")

    killed = stack.cli("invocations", "kill", inv_id)
    assert (killed.code, killed.out) == (0, f"{inv_id}  completed\n"), killed.err
    after_kill = stack.cli("invocations", "show", inv_id).out
    assert fields(after_kill)["failure"] == "409 invocation killed"
    assert after_kill.splitlines()[-1].endswith("(never fired)")
    late = stack.cli("invocations", "cancel", inv_id)
    assert late.code == 1
    assert "has already completed" in late.err

    other = proxy.send("Sleeper/nap", {"seconds": 300})
    proxy.wait_status(other, "suspended")
    cancelled = stack.cli("invocations", "cancel", other)
    assert cancelled.code == 0, cancelled.err
    assert cancelled.out.startswith(f"{other}  ")
    view = proxy.wait_status(other, "completed")
    assert view["failure"]["code"] == 409

    purged = stack.cli("invocations", "purge", inv_id, other)
    assert (purged.code, purged.out) == (0, f"{inv_id}  purged\n{other}  purged\n"), purged.err
    assert stack.cli("invocations", "show", inv_id).code == 1
    assert "no invocations" in stack.cli("invocations", "ls", "--all").out

    partly = stack.cli("invocations", "kill", "inv_missing", "--json")
    assert partly.code == 1
    assert "404 not_found" in partly.err


def test_bulk_actions(stack: Stack) -> None:
    proxy = stack.proxy
    naps = [proxy.send("Sleeper/nap", {"seconds": 300, "ledger": False}) for _ in range(3)]
    waiter = proxy.send("Approver/wait", 300)
    for inv_id in [*naps, waiter]:
        proxy.wait_status(inv_id, "suspended")

    result = stack.cli("invocations", "kill", "--service", "Sleeper", "--handler", "nap")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == "killed 3 invocations of Sleeper/nap"
    assert [line.strip() for line in lines[1:]] == naps
    remaining = table(stack.cli("invocations", "ls").out)
    assert [r["ID"] for r in remaining] == [waiter]

    as_json = stack.cli("invocations", "pause", "--service", "Approver", "--json")
    assert as_json.code == 0, as_json.err
    assert json.loads(as_json.out) == {"action": "pause", "count": 1, "ids": [waiter], "skipped": []}

    purged = stack.cli("invocations", "purge", "--service", "Sleeper")
    assert purged.out.splitlines()[0] == "purged 3 invocations of Sleeper"

    none = stack.cli("invocations", "cancel", "--service", "Child")
    assert (none.code, none.out) == (0, "cancelled 0 invocations of Child\n")


def test_usage_errors_exit_2() -> None:
    for args in (
        ["invocations", "cancel"],  # neither ids nor a filter
        ["invocations", "cancel", "inv_x", "--service", "Sleeper"],  # both
        ["invocations", "resume", "--service", "Sleeper", "--latest"],  # --latest is per id
        ["invocations", "ls", "--all", "--status", "paused"],
        ["invocations", "ls", "--limit", "0"],
        ["invocations", "ls", "--oldest-first", "--before", "inv_x"],
        ["deployments", "rm"],
        ["invocations", "ls", "--status", "sleeping"],
        ["invocations", "frobnicate"],
        ["invocations"],
        ["services"],
    ):
        result = cli(*args, admin="http://127.0.0.1:1")  # rejected before any request
        assert result.code == 2, (args, result)
        assert result.out == "", args
        assert "error" in result.err or "usage" in result.err, (args, result.err)


def test_services_and_deployments(stack: Stack) -> None:
    services = stack.cli("services", "ls")
    assert services.code == 0, services.err
    by_name = {r["NAME"]: r for r in table(services.out)}
    assert by_name["Sleeper"]["TYPE"] == "service"
    assert by_name["Sleeper"]["DEPLOYMENT"] == stack.handler.url
    assert by_name["Sleeper"]["HANDLERS"] == "nap, doze, helpers"
    assert by_name["Counter"]["HANDLERS"] == "add (exclusive), get (shared)"

    deployments = table(stack.cli("deployments", "ls").out)
    assert [d["URI"] for d in deployments] == [stack.handler.url]
    assert deployments[0]["MODE"] == "ack"

    added = stack.cli("deployments", "add", stack.handler.url)
    assert added.code == 0, added.err
    assert added.out.startswith(f"registered {deployments[0]['ID']} at {stack.handler.url} (ack mode)\n")
    registered = {r["SERVICE"]: r for r in table(added.out.split("\n", 1)[1])}
    assert registered["Sleeper"]["HANDLERS"] == "nap, doze, helpers"
    assert registered["Signup"]["TYPE"] == "workflow"
    assert registered["Signup"]["HANDLERS"] == "run (workflow), click (shared), status (shared)"

    down = stack.cli("deployments", "add", f"http://127.0.0.1:{free_port()}")
    assert down.code == 1
    assert down.err.startswith("error: 503 ") or down.err.startswith("error: 4"), down.err
    bad = stack.cli("deployments", "add", "ftp://x")
    assert bad.code == 1
    assert "400 bad_request: uri 'ftp://x' must be an http:// or https:// URL with a host" in bad.err


def test_admin_url_from_env_and_unreachable() -> None:
    port = free_port()
    result = cli("invocations", "ls", env={"PROXY_ADMIN_URL": f"http://127.0.0.1:{port}"})
    assert result.code == 1
    assert result.err.startswith(f"error: cannot reach the admin API at http://127.0.0.1:{port}: ")
    flag = cli("services", "ls", admin=f"http://127.0.0.1:{port}")
    assert flag.code == 1
    assert "cannot reach" in flag.err
    assert cli("services", "ls", admin="localhost:9070").code == 2


def test_without_a_command_python_m_proxy_is_the_server() -> None:
    result = cli("--help")
    assert result.code == 0
    assert "durable-proxy server" in result.out
    assert "--ingress-port" in result.out
    assert cli("--no-such-flag").code == 2


def test_backing_off_shows_the_last_failure(stack: Stack) -> None:
    stack.handler.kill()
    inv_id = stack.proxy.send("Child/work", 1)

    def backing_off() -> dict[str, str] | None:
        rows = table(stack.cli("invocations", "ls", "--status", "backing-off").out)
        return rows[0] if rows and "last failure" in rows[0]["INFO"] else None

    row = poll(backing_off, 20, interval=0.1, message="a backing-off row")
    assert row["ID"] == inv_id
    assert row["INFO"].startswith("retry in ")
    retries = int(row["ATTEMPT/RETRIES"].split("/")[1])
    assert retries >= 1
    shown = fields(stack.cli("invocations", "show", inv_id).out)
    assert shown["last failure"]
    stack.handler.start()
    assert stack.proxy.wait_status(inv_id, "completed")["result"] == 2

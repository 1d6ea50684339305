"""An in-process stand-in for the proxy: run handlers against an in-memory journal, no network.

`LocalRuntime` plays the proxy's role by calling `handlers_sdk.attempt.run_attempt` in a loop:
it commits the entries each attempt produces, completes what the handler waits on (timers,
awakeables, calls: one *completer* per entry kind, see `Completer`), retries failed attempts on
a `FakeClock`, and stops once the invocation completes, pauses, or waits on something nobody
will complete. Example::

    rt = LocalRuntime([orders])
    result = await rt.call("OrderFulfillment", "process", Order(...))
    inv = await rt.start("OrderFulfillment", "process", Order(...))
    inv.journal            # {index: entry}, as the proxy would have stored it
    inv.executions         # every step body that ran, with its journal index
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal

import msgspec

from handlers_sdk.ack import AckClient, AckRejected
from handlers_sdk.attempt import run_attempt
from handlers_sdk.protocol import (
    COMPLETABLE,
    AppendRequest,
    AppendResponse,
    CallEntry,
    Completed,
    Entry,
    Failed,
    Failure,
    InvokeRequest,
    JournalItem,
    RunEntry,
    Suspended,
    encode,
)
from handlers_sdk.replay import describe, header
from handlers_sdk.serde import to_json
from handlers_sdk.service import HandlerDef, Service
from handlers_sdk.testing.invocation import (
    AttemptFailedError,
    Completion,
    FakeClock,
    Invocation,
    InvocationPausedError,
    InvocationSuspendedError,
    Status,
)
from handlers_sdk.testing.keys import KeyLocks

__all__ = [
    "AttemptFailedError",
    "CommitHook",
    "Completer",
    "Completion",
    "FakeClock",
    "Invocation",
    "InvocationPausedError",
    "InvocationSuspendedError",
    "LocalRuntime",
    "Status",
]

Mode = Literal["ack", "suspend"]
_CALLBACK_URL = "inmemory://local-runtime"


#: Completes one waited-on entry, or returns None if it cannot be completed (yet). Registered per
#: entry class with `LocalRuntime.register_completer`; called with the runtime, the invocation,
#: the index and the entry.
Completer = Callable[["LocalRuntime", "Invocation", int, Any], Awaitable["Completion | None"]]
#: Applies what the proxy does when it commits a new entry of one kind (apply a state write,
#: complete a promise...) and returns the entry as stored. Registered per entry class with
#: `LocalRuntime.register_commit_hook`; called with the runtime, the invocation, index and entry.
CommitHook = Callable[["LocalRuntime", "Invocation", int, Any], Entry]


class _IndexTaken(Exception):
    """Another operation was committed at this journal index."""


class _InMemoryAck(AckClient):
    """The proxy's step-ack endpoint, in process: fenced by attempt and token, as the real one."""

    def __init__(self, runtime: LocalRuntime) -> None:
        super().__init__(None)
        self._runtime = runtime

    async def append(self, callback_url: str, request: AppendRequest) -> bytes:
        """Commit one entry, or raise AckRejected(409) like the proxy does; the answer carries the
        entry back when committing it completed it (as the proxy's does)."""
        await asyncio.sleep(0)
        self._runtime._on_append(request)
        inv = self._runtime.invocations[request.invocation_id]
        journaled = inv.journal.get(request.index)
        completed = isinstance(journaled, COMPLETABLE) and journaled.completed
        return encode(AppendResponse(index=request.index, entry=journaled if completed else None))


class LocalRuntime:
    """Runs handlers of `services` in process, playing the proxy's role (see the module docs).

    Args:
        services: the services whose handlers can be invoked (and called by other handlers).
        mode: ``"suspend"`` (default) ends every attempt at each new step and re-invokes with the
            longer journal, so every step boundary is also a replay (non-determinism shows up in
            ordinary tests); ``"ack"`` acks each step in process and replays only after failures.
        clock: the fake clock timers and retries advance (a new one by default).
        max_retries: retryable failures of an invocation before it pauses (0: the first pauses,
            so a bug surfaces as an exception with its stack trace rather than a retry loop).
        max_attempts: a guard against handlers that never finish.
        random_seed: seed of ``ctx.random()`` for invocations that do not pass their own.
    """

    def __init__(
        self,
        services: Iterable[Service] | Service,
        *,
        mode: Mode = "suspend",
        clock: FakeClock | None = None,
        max_retries: int = 0,
        max_attempts: int = 10_000,
        random_seed: int = 0,
    ) -> None:
        if mode not in ("ack", "suspend"):
            raise ValueError("mode must be 'ack' or 'suspend'")
        svcs = [services] if isinstance(services, Service) else list(services)
        self.services: dict[str, Service] = {s.name: s for s in svcs}
        self.mode: Mode = mode
        self.clock = clock or FakeClock()
        self.max_retries = max_retries
        self.max_attempts = max_attempts
        self.random_seed = random_seed
        self.invocations: dict[str, Invocation] = {}
        #: State of virtual objects and workflows: (service, key) -> state key -> JSON value.
        self.state: dict[tuple[str, str], dict[str, bytes]] = {}
        #: Durable promises of workflows: (service, key, name) -> (JSON value, rejection).
        self.promises: dict[tuple[str, str, str], tuple[bytes, Failure | None]] = {}
        self._awakeables: dict[str, tuple[bytes, Failure | None]] = {}
        self._current: dict[str, tuple[int, str]] = {}
        #: One-way sends to start: (due on the fake clock, order, child id, entry), a heap.
        self._sends: list[tuple[int, int, str, Any]] = []
        self._send_count = 0
        self._counter = 0
        self._waking = False
        #: Per-key locks and queues of objects and workflows, and each workflow key's run.
        self.keys = KeyLocks()
        self._ack = _InMemoryAck(self)
        from handlers_sdk.testing.completers import DEFAULT_COMMIT_HOOKS, DEFAULT_COMPLETERS

        self._completers: dict[type, Completer] = dict(DEFAULT_COMPLETERS)
        self._commit_hooks: dict[type, CommitHook] = dict(DEFAULT_COMMIT_HOOKS)

    # -- public API -----------------------------------------------------------------------------

    def register_completer(self, entry_type: type, completer: Completer) -> None:
        """Complete waited-on entries of `entry_type` with `completer` (replaces the default)."""
        self._completers[entry_type] = completer

    def register_commit_hook(self, entry_type: type, hook: CommitHook) -> None:
        """Apply `hook` when a new entry of `entry_type` is committed (replaces the default)."""
        self._commit_hooks[entry_type] = hook

    def resolve_awakeable(self, awakeable_id: str, value: Any = None) -> None:
        """Resolve an awakeable (before or after the handler waits on it; then `resume`)."""
        self._awakeables[awakeable_id] = (to_json(value), None)

    def reject_awakeable(self, awakeable_id: str, message: str, code: int = 500) -> None:
        """Reject an awakeable: the handler's await raises TerminalError(message, code)."""
        self._awakeables[awakeable_id] = (b"null", Failure(code=code, message=message))

    def resolve_promise(self, service: str, key: str, name: str, value: Any = None) -> None:
        """Resolve the durable promise `name` of workflow `service`/`key` from outside."""
        self.promises[(service, key, name)] = (to_json(value), None)

    def reject_promise(self, service: str, key: str, name: str, message: str, code: int = 500) -> None:
        """Reject the durable promise `name` of workflow `service`/`key` from outside."""
        self.promises[(service, key, name)] = (b"null", Failure(code=code, message=message))

    def handler_def(self, service: str | Service, handler: str) -> HandlerDef:
        """The registered handler `service`/`handler` (KeyError with a clear message if unknown)."""
        name = service.name if isinstance(service, Service) else service
        svc = self.services.get(name)
        if svc is None:
            raise KeyError(f"no service {name!r} in this runtime (have: {sorted(self.services)})")
        found = svc.handlers.get(handler)
        if found is None:
            raise KeyError(f"no handler {handler!r} in {name!r} (have: {sorted(svc.handlers)})")
        return found

    async def start(
        self,
        service: str | Service,
        handler: str,
        arg: Any = None,
        *,
        key: str = "",
        headers: dict[str, str] | None = None,
        invocation_id: str | None = None,
        random_seed: int | None = None,
        journal: Iterable[JournalItem] = (),
        crash_at: int | None = None,
    ) -> Invocation:
        """Create an invocation and run it until it completes, pauses or suspends for good.

        As with the proxy, an exclusive handler of a virtual object (or a workflow's run) whose key
        is held by an invocation that has not completed is left ``"pending"``; it runs once the
        key is free, in arrival order. A workflow's run happens once per key: starting it again
        returns the first run (as an ingress call attaches to it).

        Args:
            arg: the handler's input (any msgspec-encodable value, or ``msgspec.Raw`` JSON).
            journal: entries to start from (e.g. a journal exported from production).
            crash_at: simulate a crash: the `crash_at`-th entry the handler creates (0-based)
                is not committed and its attempt dies; the invocation then resumes.
        """
        name = service.name if isinstance(service, Service) else service
        target = self.handler_def(name, handler)  # fail fast on unknown targets
        self._counter += 1
        new_id = invocation_id or f"inv_local{self._counter:06d}"
        if target.kind == "workflow":
            run_id = self.keys.claim_run((name, key), new_id)
            if run_id in self.invocations:
                return self.invocations[run_id]
            new_id = run_id
        inv = Invocation(
            id=new_id,
            service=name,
            handler=handler,
            key=key,
            input=to_json(arg),
            random_seed=self.random_seed if random_seed is None else random_seed,
            headers=dict(headers or {}),
            crash_at=crash_at,
        )
        for item in journal:
            inv.journal[item.index] = item.entry
        self.invocations[inv.id] = inv
        exclusive = target.service_type != "service" and target.kind in ("exclusive", "workflow")
        if exclusive and not self.keys.enter((name, key), inv.id):
            inv.status = "pending"
            return inv
        await self._drive(inv)
        await self._after()
        return inv

    async def call(self, service: str | Service, handler: str, arg: Any = None, *, type_: Any = Any, **kw: Any) -> Any:
        """`start` the invocation and return its result (raises like `Invocation.result`)."""
        inv = await self.start(service, handler, arg, **kw)
        return inv.result(type_)

    async def resume(self, inv: Invocation) -> Invocation:
        """Run a suspended invocation again (after resolving an awakeable, say)."""
        if inv.status == "suspended":
            inv.status = "running"
            await self._drive(inv)
            await self._after()
        return inv

    async def cancel(self, inv: Invocation | str) -> Invocation:
        """Cancel an invocation as the proxy's ``PATCH :9070/invocations/{id}/cancel`` does.

        The invocations its open calls started are cancelled first. Then the handler runs again
        and gets a TerminalError (409) at its first new operation, so its compensation runs. An
        invocation still pending for its key completes as cancelled without running.

        Raises:
            ValueError: the invocation has already completed.
        """
        target = self._open(inv)
        await self._cancel(target)
        await self._after()
        return target

    async def kill(self, inv: Invocation | str) -> Invocation:
        """Kill an invocation as the proxy's ``PATCH :9070/invocations/{id}/kill`` does: it completes
        at once with a 409 failure and no handler code of it runs again; so do its open calls.

        Raises:
            ValueError: the invocation has already completed.
        """
        target = self._open(inv)
        self._kill(target)
        await self._after()
        return target

    def _open(self, inv: Invocation | str) -> Invocation:
        found = self.invocations[inv] if isinstance(inv, str) else inv
        if found.is_done:
            raise ValueError(f"invocation {found.id} has already completed")
        return found

    def _open_children(self, inv: Invocation) -> list[Invocation]:
        """The invocations of the calls `inv` still waits for."""
        ids = [
            entry.invocation_id
            for entry in inv.journal.values()
            if isinstance(entry, CallEntry) and not entry.completed
        ]
        return [self.invocations[i] for i in ids if i in self.invocations and not self.invocations[i].is_done]

    async def _cancel(self, inv: Invocation) -> None:
        for child in self._open_children(inv):
            await self._cancel(child)
        if inv.is_done:
            return
        if inv.status == "pending":
            self._finish(inv, Failed(failure=Failure(code=409, message="invocation cancelled")))
            return
        inv.cancelled, inv.retries, inv.status = True, 0, "running"
        await self._drive(inv)

    def _kill(self, inv: Invocation) -> None:
        for child in self._open_children(inv):
            self._kill(child)
        self._finish(inv, Failed(failure=Failure(code=409, message="invocation killed")))

    def _finish(self, inv: Invocation, outcome: Completed | Failed) -> None:
        """`inv` completed: record its outcome and let its key go."""
        inv.status, inv.outcome, inv.waiting_on = "completed", outcome, []
        self.keys.leave((inv.service, inv.key), inv.id)

    async def _after(self) -> None:
        """Run what the finished work queued (one-way sends, invocations waiting for a key), then
        wake invocations whose waits can now complete (a promise resolved by another handler, say).

        When only delayed sends are left, the fake clock skips to the earliest one, as it does
        for a timer the handler waits on.
        """
        if self._waking:
            return
        self._waking = True
        try:
            progress = True
            while progress:
                progress = False
                now = self.clock.now_ms()
                while self._sends and self._sends[0][0] <= now:
                    _, _, child_id, entry = heapq.heappop(self._sends)
                    if child_id not in self.invocations:
                        await self.start(
                            entry.service, entry.handler, msgspec.Raw(bytes(entry.input)), key=entry.key,
                            invocation_id=child_id,
                        )  # fmt: skip
                        progress = True
                for admitted in self.keys.admit():
                    inv = self.invocations[admitted]
                    inv.status = "running"
                    await self._drive(inv)
                    progress = True
                for inv in list(self.invocations.values()):
                    if inv.status == "suspended" and await self._complete_waits(inv, inv.waiting_on):
                        inv.status = "running"
                        await self._drive(inv)
                        progress = True
                if not progress and self._sends:
                    self.clock.advance_to(self._sends[0][0])
                    progress = True
        finally:
            self._waking = False

    # -- the proxy's role -----------------------------------------------------------------------

    def _request(self, inv: Invocation, handler: HandlerDef) -> tuple[HandlerDef, InvokeRequest]:
        inv.attempts += 1
        if inv.attempts > self.max_attempts:
            raise AttemptFailedError(f"{inv.id}: more than {self.max_attempts} attempts")
        token = f"tok{inv.attempts}"
        inv._attempt_clock = (self.clock.now_ms(), time.time_ns() // 1_000_000)
        self._current[inv.id] = (inv.attempts, token)
        request = InvokeRequest(
            invocation_id=inv.id,
            service=inv.service,
            handler=inv.handler,
            key=inv.key,
            input=msgspec.Raw(inv.input),
            journal=inv.journal_items,
            attempt=inv.attempts,
            token=token,
            callback_url=_CALLBACK_URL if self.mode == "ack" else "",
            random_seed=inv.random_seed,
            headers=inv.headers,
            cancelled=inv.cancelled,
            state={k: msgspec.Raw(v) for k, v in self.state.get((inv.service, inv.key), {}).items()},
        )
        return inv.steps.instrument(handler, inv.attempts), request

    async def _drive(self, inv: Invocation) -> None:
        handler = self.handler_def(inv.service, inv.handler)
        while True:
            observed, request = self._request(inv, handler)
            outcome = await run_attempt(observed, request, self.mode, self._ack)
            self._current.pop(inv.id, None)
            try:
                committed = all(self._commit(inv, item) for item in outcome.entries)
            except _IndexTaken as exc:
                raise AttemptFailedError(f"{inv.id}: {exc} (the proxy would refuse this outcome)") from None
            if not committed or inv.crashed_attempt == request.attempt:
                continue  # the attempt "died": its outcome never reached the proxy
            if isinstance(outcome, Completed | Failed):
                self._finish(inv, outcome)
                return
            if isinstance(outcome, Suspended):
                if outcome.waiting_on and not await self._complete_waits(inv, outcome.waiting_on):
                    inv.status, inv.outcome, inv.waiting_on = "suspended", outcome, list(outcome.waiting_on)
                    return
                continue
            if outcome.behavior == "pause" or inv.retries >= self.max_retries:
                inv.status, inv.outcome = "paused", outcome
                return
            inv.retries += 1
            if outcome.retry_after_ms:
                self.clock.advance(outcome.retry_after_ms / 1000)

    def _commit(self, inv: Invocation, item: JournalItem) -> bool:
        """Commit one handler-created entry; False if the injected crash happens instead."""
        if inv.crash_at is not None and not inv.crashed_attempt and len(inv.commit_log) == inv.crash_at:
            inv.crashed_attempt = inv.attempts
            inv.journal_at_crash = frozenset(inv.journal)
            return False
        existing = inv.journal.get(item.index)
        if existing is not None:
            # As the proxy: a re-sent entry is accepted, another operation at a taken index is not.
            same = (
                encode(existing) == encode(item.entry)
                if isinstance(existing, RunEntry) or isinstance(item.entry, RunEntry)
                else header(existing) == header(item.entry)
            )
            if not same:
                raise _IndexTaken(f"journal index {item.index} is already taken by {describe(existing)}")
            return True
        hook = self._commit_hooks.get(type(item.entry))
        inv.journal[item.index] = hook(self, inv, item.index, item.entry) if hook else item.entry
        inv.commit_log.append(item.index)
        inv._created_at[item.index] = inv._attempt_clock
        return True

    def _on_append(self, request: AppendRequest) -> None:
        inv = self.invocations.get(request.invocation_id)
        if inv is None or self._current.get(inv.id) != (request.attempt, request.token):
            raise AckRejected(409, b"stale attempt")
        if inv.crashed_attempt == request.attempt:
            raise AckRejected(409, b"attempt killed by a simulated crash")
        try:
            committed = self._commit(inv, JournalItem(index=request.index, entry=request.entry))
        except _IndexTaken as exc:
            raise AckRejected(409, str(exc).encode()) from None
        if not committed:
            raise AckRejected(409, b"simulated crash before the commit")

    def fake_deadline(self, inv: Invocation, index: int, wall_ms: int) -> int:
        """Turn a real wall-clock deadline the SDK wrote into entry `index` into fake-clock time."""
        fake, wall = inv._created_at.get(index, inv._attempt_clock)
        return fake + max(0, wall_ms - wall)

    async def _complete_waits(self, inv: Invocation, waiting_on: list[int]) -> bool:
        """Complete what the handler waits on: everything ready now, else the earliest timer."""
        # Completed at commit (a promise peek, say) or by some other invocation meanwhile.
        if any(getattr(inv.journal.get(index), "completed", False) for index in waiting_on):
            return True
        ready: list[tuple[int, Completion]] = []
        for index in waiting_on:
            entry = inv.journal.get(index)
            completer = self._completers.get(type(entry)) if entry is not None else None
            if completer is None:
                continue
            completion = await completer(self, inv, index, entry)
            if completion is not None:
                ready.append((index, completion))
        if not ready:
            return False
        now = self.clock.now_ms()
        due = [(i, c) for i, c in ready if c.at_ms is None or c.at_ms <= now]
        if not due:
            first = min(c.at_ms or now for _, c in ready)
            self.clock.advance_to(first)
            due = [(i, c) for i, c in ready if (c.at_ms or now) <= first]
        for index, completion in sorted(due, key=lambda p: (p[1].at_ms or 0, p[0])):
            inv.journal[index] = self.numbered(inv, completion.entry)
        return True

    def numbered(self, inv: Invocation, entry: Entry) -> Entry:
        """`entry` with the next completion sequence number of `inv`, if it has a ``seq`` field."""
        if "seq" in type(entry).__struct_fields__:
            return msgspec.structs.replace(entry, seq=inv._next_seq())
        return entry

    def queue_send(self, child_id: str, entry: Any) -> None:
        """Start the target of a one-way send once the current work is done and its delay (fake
        clock, from now) has passed."""
        due = self.clock.now_ms() + max(0, int(getattr(entry, "delay_ms", 0)))
        self._send_count += 1
        heapq.heappush(self._sends, (due, self._send_count, child_id, entry))

    async def _run_child(self, service: str, handler: str, key: str, input_json: bytes, child_id: str) -> Invocation:
        """Start (or find, on replay) the child invocation of a call entry and run it."""
        child = self.invocations.get(child_id)
        if child is None:
            child = await self.start(service, handler, msgspec.Raw(input_json), key=key, invocation_id=child_id)
        elif child.status == "suspended":
            await self.resume(child)
        return child

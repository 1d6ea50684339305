"""``POST /query``: SQL over the proxy's records, as Restate's admin API answers it.

Restate's CLI sends SQL (``restate sql``, and the queries of its ``invocations``, ``services``,
``deployments`` and ``state`` commands) and reads the answer as JSON ``{"rows": [...]}`` when it asks
with ``Accept: application/json``, else as an Arrow IPC stream. The SQL engine is DuckDB, in memory,
one connection per query: the tables the query names (DuckDB's own binder says which) are loaded from
one read transaction of the store (`Runtime.sql_snapshot`) as Arrow tables, then the query runs over
them. Nothing is written back: the tables are a copy.

Bounds: at most `ROW_LIMIT` invocations (the newest) and `ROW_LIMIT` journal rows are loaded per
query; the ``x-restate-query-truncated: true`` header says when there were more. Object and workflow
state is listed for the keys of the invocations loaded (the store keeps state under a hash of the key).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import json
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from durable_core.errors import BadRequest
from durable_core.records import InvocationRecord
from handlers_sdk.protocol import PROTOCOL_VERSION
from proxy.api.http import read_body
from proxy.engine.runtime import Runtime, SqlSnapshot

__all__ = [
    "ARROW_STREAM",
    "ROW_LIMIT",
    "TABLES",
    "lift_subquery_aliases",
    "query_endpoint",
    "run_query",
    "service_ty",
    "state_version",
]

#: Most invocations, and most journal rows, one query loads.
ROW_LIMIT = 10_000
_MAX_QUERY_BODY = 64 * 1024
ARROW_STREAM = "application/vnd.apache.arrow.stream"

_SERVICE_TY = {"service": "service", "object": "virtual_object", "workflow": "workflow"}
#: The proxy's statuses as ``sys_invocation_status`` names them (``sys_invocation`` uses the proxy's).
_RAW_STATUS = {"pending": "inboxed", "running": "invoked", "backing-off": "invoked"}


def _columns(spec: str) -> list[tuple[str, str]]:
    """``"name:type name:type ..."`` as (name, type) pairs (types: string, uint, bool, ts, binary)."""
    return [(part.split(":")[0], part.split(":")[1]) for part in spec.split()]


_INVOCATION_COLUMNS = _columns(
    "id:string target:string target_service_name:string target_service_key:string target_handler_name:string "
    "target_service_ty:string status:string completion_result:string completion_failure:string "
    "idempotency_key:string invoked_by:string invoked_by_id:string invoked_by_service_name:string "
    "invoked_by_target:string pinned_deployment_id:string pinned_service_protocol_version:uint "
    "last_attempt_deployment_id:string last_attempt_server:string trace_id:string journal_size:uint "
    "retry_count:uint last_failure:string last_failure_error_code:string last_failure_related_entry_index:uint "
    "last_failure_related_entry_name:string last_failure_related_entry_type:string created_at:ts modified_at:ts "
    "inboxed_at:ts scheduled_at:ts scheduled_start_at:ts running_at:ts completed_at:ts next_retry_at:ts "
    "last_start_at:ts in_flight:bool"
)
#: Every table the queries can read, and its columns (the columns Restate's CLI reads, and more).
TABLES: dict[str, list[tuple[str, str]]] = {
    "sys_invocation": _INVOCATION_COLUMNS,
    "sys_invocation_status": _INVOCATION_COLUMNS,
    "sys_journal": _columns(
        "id:string index:uint entry_type:string name:string completed:bool invoked_id:string invoked_target:string "
        "sleep_wakeup_at:ts promise_name:string raw:binary version:uint entry_json:string appended_at:ts"
    ),
    "state": _columns("service_name:string service_key:string key:string value_utf8:string value:binary"),
    "sys_inbox": _columns("service_name:string service_key:string id:string sequence_number:uint"),
    "sys_service": _columns("name:string revision:uint public:bool ty:string deployment_id:string"),
    "sys_deployment": _columns(
        "id:string ty:string endpoint:string created_at:ts min_service_protocol_version:uint "
        "max_service_protocol_version:uint"
    ),
}
#: The tables read from invocation records, journals and state.
_INVOCATION_TABLES = frozenset({"sys_invocation", "sys_invocation_status", "sys_inbox"})

#: Journal entry types in the names of Restate's version-1 journal (the CLI renders these).
_ENTRY_TYPES = {
    "run": "Run", "sleep": "Sleep", "call": "Call", "send": "OneWayCall", "awakeable": "Awakeable",
    "get_state": "GetState", "set_state": "SetState", "clear_state": "ClearState", "clear_all_state": "ClearAllState",
    "state_keys": "GetStateKeys", "promise_get": "GetPromise", "promise_peek": "PeekPromise",
    "promise_complete": "CompletePromise", "cancel": "CancelInvocation",
}  # fmt: skip


def service_ty(service_type: str) -> str:
    """A service type as the SQL tables name it (``service``, ``virtual_object``, ``workflow``)."""
    return _SERVICE_TY.get(service_type, service_type)


def state_version(state: dict[str, bytes]) -> str:
    """Restate's version of a key's state (``StateMutationVersion::from_user_state``): sha256 over the
    entries sorted by name, each as its 8-byte big-endian index, 0x01, name, 0x02, value, 0x03; in
    URL-safe base64 without padding. `POST /services/{name}/state` compares it with ``version``."""
    hasher = hashlib.sha256()
    for i, (name, value) in enumerate(sorted((k.encode("utf-8", "surrogatepass"), v) for k, v in state.items())):
        hasher.update(i.to_bytes(8, "big") + b"\x01" + name + b"\x02" + value + b"\x03")
    return base64.urlsafe_b64encode(hasher.digest()).decode("ascii").rstrip("=")


def _ts(ms: int | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).replace(tzinfo=None) if ms else None


def _target(record: InvocationRecord) -> str:
    return f"{record.service}/{record.key + '/' if record.key else ''}{record.handler}"


def _invocation_rows(snapshot: SqlSnapshot, raw_status: bool) -> list[dict[str, Any]]:
    by_id = {r.id: r for r in snapshot.invocations}
    service_types = {s.name: s.type for s in snapshot.services}
    rows = []
    for r in snapshot.invocations:
        parent = by_id.get(r.parent_id)
        failure = r.failure if r.is_completed else None
        status = _RAW_STATUS.get(r.status, r.status) if raw_status else r.status
        rows.append({
            "id": r.id, "target": _target(r), "target_service_name": r.service,
            "target_service_key": r.key if r.keyed else None, "target_handler_name": r.handler,
            "target_service_ty": service_ty(service_types.get(r.service, "object" if r.keyed else "service")),
            "status": status,
            "completion_result": None if not r.is_completed else ("failure" if failure else "success"),
            "completion_failure": f"[{failure.code}] {failure.message}" if failure else None,
            "idempotency_key": r.idempotency_key, "invoked_by": "service" if r.parent_id else "ingress",
            "invoked_by_id": r.parent_id or None, "invoked_by_service_name": parent.service if parent else None,
            "invoked_by_target": _target(parent) if parent else None,
            "pinned_deployment_id": r.deployment_id or None,
            "pinned_service_protocol_version": PROTOCOL_VERSION if r.deployment_id else None,
            "last_attempt_deployment_id": (r.deployment_id or None) if r.attempt else None,
            "last_attempt_server": None, "trace_id": None, "journal_size": len(snapshot.journals.get(r.id, ())) or None,
            "retry_count": r.retry_count,
            "last_failure": r.last_failure.message if r.last_failure else None,
            "last_failure_error_code": str(r.last_failure.code) if r.last_failure else None,
            "last_failure_related_entry_index": None, "last_failure_related_entry_name": None,
            "last_failure_related_entry_type": None,
            "created_at": _ts(r.created_ms), "modified_at": _ts(r.modified_ms),
            "inboxed_at": _ts(r.created_ms) if r.status == "pending" else None,
            "scheduled_at": _ts(r.created_ms) if r.scheduled_at_ms else None,
            "scheduled_start_at": _ts(r.scheduled_at_ms), "running_at": None,
            "completed_at": _ts(r.completed_ms), "next_retry_at": None if r.is_completed else _ts(r.next_retry_ms),
            "last_start_at": None, "in_flight": r.status == "running",
        })  # fmt: skip
    return rows


def _journal_rows(snapshot: SqlSnapshot) -> list[dict[str, Any]]:
    rows = []
    for invocation_id, journal in snapshot.journals.items():
        for raw in journal:
            item = msgspec.json.decode(raw)
            entry = item.get("entry") or {}
            kind = str(entry.get("type", ""))
            target = f"{entry.get('service')}/{entry['key'] + '/' if entry.get('key') else ''}{entry.get('handler')}"
            rows.append({
                "id": invocation_id, "index": item.get("index"), "entry_type": _ENTRY_TYPES.get(kind, kind),
                "name": entry.get("name") or None, "completed": bool(entry.get("completed")),
                "invoked_id": entry.get("invocation_id"),
                "invoked_target": target if kind in ("call", "send") and "service" in entry else None,
                "sleep_wakeup_at": _ts(entry.get("wake_at_ms")) if kind == "sleep" else None,
                "promise_name": entry.get("name") if kind.startswith("promise_") else None,
                "raw": raw, "version": 1, "entry_json": msgspec.json.encode(entry).decode(), "appended_at": None,
            })  # fmt: skip
    return rows


def _state_rows(snapshot: SqlSnapshot) -> list[dict[str, Any]]:
    rows = []
    for (service, key), state in snapshot.states.items():
        for name, value in state.items():
            try:
                text: str | None = value.decode("utf-8")
            except UnicodeDecodeError:
                text = None
            rows.append({"service_name": service, "service_key": key, "key": name, "value_utf8": text, "value": value})
    return rows


def _rows(table: str, snapshot: SqlSnapshot) -> list[dict[str, Any]]:
    if table in ("sys_invocation", "sys_invocation_status"):
        return _invocation_rows(snapshot, raw_status=table == "sys_invocation_status")
    if table == "sys_inbox":
        pending = sorted((r for r in snapshot.invocations if r.status == "pending"), key=lambda r: r.id)
        return [
            {"service_name": r.service, "service_key": r.key, "id": r.id, "sequence_number": n}
            for n, r in enumerate(pending)
        ]
    if table == "sys_journal":
        return _journal_rows(snapshot)
    if table == "state":
        return _state_rows(snapshot)
    if table == "sys_service":
        return [
            {"name": s.name, "revision": 1, "public": True, "ty": service_ty(s.type), "deployment_id": s.deployment_id}
            for s in snapshot.services
        ]
    return [
        {"id": d.id, "ty": "http", "endpoint": d.uri, "created_at": _ts(d.created_ms),
         "min_service_protocol_version": PROTOCOL_VERSION, "max_service_protocol_version": PROTOCOL_VERSION}
        for d in snapshot.deployments
    ]  # fmt: skip


def _arrow_table(table: str, rows: list[dict[str, Any]]) -> Any:
    import pyarrow as pa  # type: ignore[import-untyped]

    types = {"string": pa.string(), "uint": pa.uint64(), "bool": pa.bool_(), "ts": pa.timestamp("ms"),
             "binary": pa.binary()}  # fmt: skip
    schema = pa.schema([(name, types[kind]) for name, kind in TABLES[table]])
    return pa.Table.from_pylist(rows, schema=schema)


def _json_value(value: Any) -> Any:
    """A value as arrow-json writes it: timestamps in RFC 3339 (UTC), binary as hex."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.isoformat(timespec="milliseconds") + "Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


def _run(con: Any, sql: str) -> Any:
    """`sql`'s answer as an Arrow table (an empty one for a statement with no result)."""
    import pyarrow as pa

    # con.sql, not execute(): Arrow out of a DB-API result is an extra copy (DuckDB 2 warns).
    relation = con.sql(sql)
    return relation.to_arrow_table() if relation is not None else pa.table({})


def _lift(node: Any) -> bool:
    """Give every aliasless subquery in FROM whose own FROM is one named table that table's
    alias (or name); True if any was given one."""
    changed = False
    if isinstance(node, dict):
        if node.get("type") == "SUBQUERY" and not node.get("alias"):
            inner = (node.get("subquery") or {}).get("node") or {}
            source = inner.get("from_table") if isinstance(inner, dict) else None
            if isinstance(source, dict) and source.get("type") == "BASE_TABLE":
                node["alias"] = source.get("alias") or source.get("table_name")
                changed = bool(node["alias"])
        for value in node.values():
            changed = _lift(value) or changed
    elif isinstance(node, list):
        for value in node:
            changed = _lift(value) or changed
    return changed


def lift_subquery_aliases(con: Any, sql: str) -> str | None:
    """`sql` with DataFusion's scoping of a derived table that has no alias: its one table's alias
    stays visible outside it. Restate's CLI counts with ``SELECT COUNT(1) FROM (SELECT * FROM
    sys_invocation inv LIMIT n) WHERE inv.target_service_name = ...``, which DataFusion binds and
    DuckDB, as standard SQL, does not (the subquery is ``unnamed_subquery`` there). The rewrite
    runs on DuckDB's own parse tree (``json_serialize_sql``, then ``json_deserialize_sql``): such a
    subquery gets the alias (or the name) of the table it reads, which is what the outer
    references mean. None when the SQL has no such subquery (or does not parse).

    Only tried after DuckDB refused to bind the query as written, so a query that binds is never
    rewritten."""
    import duckdb

    try:
        tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0])
        if tree.get("error") or not _lift(tree.get("statements")):
            return None
        lifted: str = con.execute("SELECT json_deserialize_sql(?)", [json.dumps(tree)]).fetchall()[0][0]
    except duckdb.Error:  # a statement the serializer does not cover
        return None
    return lifted


class _Query(msgspec.Struct, forbid_unknown_fields=False):
    query: str


def run_query(runtime: Runtime, sql: str, as_json: bool) -> tuple[bytes, str, bool]:
    """Run `sql`; returns (body, content type, truncated).

    Raises:
        BadRequest: the SQL does not parse or bind, or fails.
    """
    import duckdb
    import pyarrow as pa

    # No file system, network or extensions: the SQL sees the registered snapshot tables and
    # nothing else (it could read any file the proxy can, e.g. read_csv('/etc/passwd'), or write one).
    con = duckdb.connect(":memory:", config={"enable_external_access": False})
    try:
        try:
            named = {name.lower() for name in con.get_table_names(sql)}
        except duckdb.Error as exc:
            raise BadRequest(f"bad SQL: {exc}") from None
        wanted = named & TABLES.keys()
        snapshot = runtime.sql_snapshot(
            invocations=bool(wanted & (_INVOCATION_TABLES | {"state"})),
            journals="sys_journal" in wanted,
            states="state" in wanted,
            limit=ROW_LIMIT,
        )
        # Every table exists, the ones the query does not name empty: `information_schema.columns`
        # lists them all (the CLI asks it which columns there are before it reads a table).
        for table in TABLES:
            con.register(table, _arrow_table(table, _rows(table, snapshot) if table in wanted else []))
        try:
            result = _run(con, sql)
        except duckdb.BinderException as exc:
            # Retried once with DataFusion's scoping of derived tables (see `lift_subquery_aliases`).
            lifted = lift_subquery_aliases(con, sql)
            if lifted is None:
                raise BadRequest(f"query failed: {exc}") from None
            try:
                result = _run(con, lifted)
            except duckdb.Error:
                raise BadRequest(f"query failed: {exc}") from None
        except duckdb.Error as exc:
            raise BadRequest(f"query failed: {exc}") from None
    finally:
        con.close()
    if as_json:
        rows = [_json_value({k: v for k, v in row.items() if v is not None}) for row in result.to_pylist()]
        return msgspec.json.encode({"rows": rows}), "application/json", snapshot.truncated
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, result.schema) as writer:
        writer.write_table(result)
    return sink.getvalue().to_pybytes(), ARROW_STREAM, snapshot.truncated


def query_endpoint(runtime: Runtime) -> Any:
    """The ``POST /query`` handler."""

    async def query(request: Request) -> Response:
        body = await read_body(request, _MAX_QUERY_BODY, runtime.settings.body_read_timeout)
        try:
            sql = msgspec.json.decode(body, type=_Query).query
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError) as exc:
            raise BadRequest(f'expected {{"query": "select ..."}}: {exc}') from None
        as_json = request.headers.get("accept", "").strip() == "application/json"
        payload, content_type, truncated = run_query(runtime, sql, as_json)
        headers = {"x-restate-query-truncated": "true"} if truncated else {}
        # Exactly "application/json": the CLI compares the content type byte for byte.
        return Response(payload, headers={**headers, "content-type": content_type})

    return query

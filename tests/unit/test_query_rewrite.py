"""proxy/api/query.py `lift_subquery_aliases`: DataFusion's scoping of an aliasless derived table,
done on DuckDB's own parse tree."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

duckdb = pytest.importorskip("duckdb")
pa = pytest.importorskip("pyarrow")

from proxy.api.query import lift_subquery_aliases  # noqa: E402

#: Restate's CLI's count of `invocations list --service Greeter` (crates/cli, `count_query`).
CLI_COUNT = """SELECT COUNT(1) FROM (SELECT
            *
        FROM sys_invocation inv
        LIMIT 50000
        )
        WHERE inv.target_service_name = 'Greeter' AND inv.status = 'completed'"""


@pytest.fixture
def con() -> Iterator[Any]:
    connection = duckdb.connect(":memory:", config={"enable_external_access": False})
    connection.register(
        "sys_invocation",
        pa.table({"id": ["a", "b", "c"], "target_service_name": ["Greeter", "Greeter", "Counter"],
                  "status": ["completed", "running", "completed"]}),
    )  # fmt: skip
    yield connection
    connection.close()


def test_the_clis_count_query_binds_once_lifted(con: Any) -> None:
    with pytest.raises(duckdb.BinderException):
        con.sql(CLI_COUNT)
    lifted = lift_subquery_aliases(con, CLI_COUNT)
    assert lifted is not None
    assert con.sql(lifted).fetchall() == [(1,)]


def test_a_subquery_without_its_alias_in_use_is_unchanged_in_meaning(con: Any) -> None:
    sql = "SELECT count(*) FROM (SELECT * FROM sys_invocation) WHERE status = 'completed'"
    lifted = lift_subquery_aliases(con, sql)
    assert lifted is not None  # the subquery gets the table's name; the answer stays the same
    assert con.sql(lifted).fetchall() == con.sql(sql).fetchall() == [(2,)]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM sys_invocation inv WHERE inv.id = 'a'",  # no subquery
        "SELECT count(*) FROM (SELECT * FROM sys_invocation) AS s WHERE s.id = 'a'",  # already named
        "SELECT count(*) FROM (SELECT 1 AS x) WHERE x = 1",  # no table to take the alias of
        "SELEC nonsense",  # does not parse
    ],
)
def test_nothing_to_lift(con: Any, sql: str) -> None:
    assert lift_subquery_aliases(con, sql) is None

"""The common SQL subset helpers (pure)."""
from __future__ import annotations

import pytest

from libs.storage.sql import (
    SQLTemplateError,
    is_read_only,
    render_ddl,
    split_script,
    to_sqlite_placeholders,
)


@pytest.mark.parametrize(
    "src,want",
    [
        ("SELECT * FROM t WHERE a = $1 AND b = $2", "SELECT * FROM t WHERE a = ?1 AND b = ?2"),
        ("VALUES ($10, $2, $1)", "VALUES (?10, ?2, ?1)"),
        ("SELECT '$1', \"$2\", $3", "SELECT '$1', \"$2\", ?3"),
        ("SELECT 'it''s $1' || $1", "SELECT 'it''s $1' || ?1"),
        ("SELECT $1 -- comment $2\n, $3", "SELECT ?1 -- comment $2\n, ?3"),
        ("SELECT /* $1 */ $2", "SELECT /* $1 */ ?2"),
        ("SELECT 1", "SELECT 1"),
    ],
)
def test_placeholder_rewrite(src: str, want: str) -> None:
    assert to_sqlite_placeholders(src) == want


@pytest.mark.parametrize(
    "sql,ro",
    [
        ("SELECT 1", True),
        ("  select a from t", True),
        ("WITH x AS (SELECT 1) SELECT * FROM x", True),
        ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", False),
        ("INSERT INTO t VALUES ($1) RETURNING id", False),
        ("UPDATE t SET a = 1", False),
        ("SELECT 'INSERT' FROM t", True),
        ("-- SELECT\nDELETE FROM t", False),
        ("PRAGMA user_version", False),
    ],
)
def test_is_read_only(sql: str, ro: bool) -> None:
    assert is_read_only(sql) is ro


def test_render_ddl_per_dialect() -> None:
    ddl = "CREATE TABLE t (id {{BIGINT_PK}}, b {{ BLOB }}, f {{BOOLEAN}})"
    assert "IDENTITY" in render_ddl(ddl, "postgres") and "BYTEA" in render_ddl(ddl, "postgres")
    sq = render_ddl(ddl, "sqlite")
    assert "INTEGER PRIMARY KEY AUTOINCREMENT" in sq and "BLOB" in sq and "{{" not in sq
    with pytest.raises(SQLTemplateError):
        render_ddl("CREATE TABLE t (x {{NOPE}})", "sqlite")


def test_split_script_keeps_strings_comments_and_triggers() -> None:
    script = """
    -- leading comment; with semicolon
    CREATE TABLE a (x TEXT);
    INSERT INTO a VALUES ('one; two');
    CREATE TRIGGER trg AFTER INSERT ON a BEGIN
        INSERT INTO a VALUES ('nested');
        DELETE FROM a WHERE x = 'z';
    END;
    /* trailing; comment */
    """
    parts = split_script(script)
    assert len(parts) == 3
    assert parts[1].endswith("VALUES ('one; two');")
    assert parts[2].startswith("CREATE TRIGGER") and parts[2].rstrip().endswith("END;")
    assert split_script("SELECT 1") == ["SELECT 1"]
    assert split_script("  ;; -- nothing\n") == []

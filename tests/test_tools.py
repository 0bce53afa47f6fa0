"""Agent tools as an attacker would try them: the calculator never evaluates code, sql
never writes, http_get never leaves its allow-list; and tools from typed functions."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal

import pytest

from alicerce.tools.base import ToolFailed, function_tool
from alicerce.tools.calculator import evaluate, shown
from alicerce.tools.dates import dates
from alicerce.tools.http import http_get
from alicerce.tools.sql import sql


@pytest.mark.parametrize(("expr", "value"), [
    ("4 * 120", "480"), ("(3000 * 70) / 100", "2100"), ("0.1 + 0.2", "0.3"),
    ("2 ** 10", "1024"), ("-(3 - 5) % 3", "2"), ("round(10 / 3, 2)", "3.33"),
    ("max(1, 7, 3)", "7"), ("sqrt(16)", "4"), ("7 // 2", "3"), ("5 \u00d7 3", "15")])
def test_the_calculator_computes_arithmetic(expr: str, value: str) -> None:
    assert shown(evaluate(expr)) == value


@pytest.mark.parametrize(("expr", "match"), [
    ("__import__('os').system('id')", "not allowed"),
    ("open('/etc/passwd').read()", "not allowed"),
    ("(1).__class__", "not allowed"),
    ("x + 1", "not allowed"),
    ("[1, 2, 3]", "not allowed"),
    ("'a' * 3", "not allowed"),
    ("lambda: 1", "not allowed"),
    ("9 ** 9 ** 9", "exponents are limited"),
    ("10 ** 60", "limited to"),
    ("1 / 0", "division by zero"),
    ("1 +", "not an arithmetic expression"),
    ("1" * 400, "over 300 characters"),
    ("round(1, ndigits=2)", "not allowed"),
])
def test_the_calculator_refuses_anything_but_arithmetic(expr: str, match: str) -> None:
    with pytest.raises(ToolFailed, match=match):
        evaluate(expr)


def test_dates_count_business_days_with_national_holidays() -> None:
    t = dates({"country": "BR"})

    def run(**args: object) -> str:
        return t.call(t.check(args)).text
    assert run(operation="add_days", date="2026-03-03", days=30).startswith("2026-04-02")
    # 2026-10-12 (a Monday) is a national holiday in Brazil: it is not a business day
    assert run(operation="add_business_days", date="2026-10-09", days=1).startswith(
        "2026-10-13")
    assert run(operation="add_business_days", date="2026-10-20", days=-5).startswith(
        "2026-10-13")
    assert run(operation="business_days_between", date="2026-10-09", end="2026-10-16") == "4"
    assert run(operation="days_between", date="2026-01-01", end="2026-12-31") == "364"
    assert "sábado" in run(operation="weekday", date="2026-07-18")
    with pytest.raises(ToolFailed, match="YYYY-MM-DD"):
        run(operation="weekday", date="18/07/2026")
    with pytest.raises(ToolFailed, match="needs days"):
        run(operation="add_days", date="2026-07-18")
    with pytest.raises(ToolFailed, match="bad arguments for dates: operation"):
        t.check({"operation": "explode"})


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    path = tmp_path / "shop.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE sales (id INTEGER PRIMARY KEY, region TEXT, amount REAL)")
    db.executemany("INSERT INTO sales (region, amount) VALUES (?, ?)",
                   [("norte" if i % 2 else "sul", float(i)) for i in range(200)])
    db.commit()
    db.close()
    return path


def test_sql_reads_with_row_caps_and_describes_its_tables(shop: Path) -> None:
    t = sql({"path": str(shop), "max_rows": 5})
    assert "sales(id INTEGER, region TEXT, amount REAL)" in t.description
    out = t.call(t.check({"query": "SELECT region, SUM(amount) FROM sales GROUP BY region "
                                   "ORDER BY 1"})).text
    assert out.splitlines() == ["region | SUM(amount)", "norte | 10000.0", "sul | 9900.0"]
    many = t.call(t.check({"query": "SELECT id FROM sales"})).text.splitlines()
    assert len(many) == 7 and many[-1] == "(only the first 5 rows)"


@pytest.mark.parametrize("query", [
    "INSERT INTO sales (region, amount) VALUES ('x', 1)",
    "UPDATE sales SET amount = 0",
    "DELETE FROM sales",
    "DROP TABLE sales",
    "CREATE TABLE t (x)",
    "PRAGMA writable_schema = ON",
    "ATTACH DATABASE '/tmp/other.db' AS other",
    "SELECT 1; DELETE FROM sales",
    "WITH x AS (SELECT 1) DELETE FROM sales",
])
def test_sql_never_writes(shop: Path, query: str) -> None:
    t = sql({"path": str(shop)})
    with pytest.raises(ToolFailed, match="the query failed"):
        t.call(t.check({"query": query}))
    db = sqlite3.connect(shop)
    assert db.execute("SELECT COUNT(*), SUM(amount) FROM sales").fetchone() == (200, 19900.0)
    assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["sales"]


def test_sql_stops_a_runaway_query_at_its_time_cap(shop: Path) -> None:
    t = sql({"path": str(shop), "timeout_s": 0.2})
    with pytest.raises(ToolFailed, match=r"ran past 0\.2 s"):
        t.call(t.check({"query": "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 "
                                  "FROM n) SELECT COUNT(*) FROM n"}))


class _Site(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/away":
            self.send_response(302)
            self.send_header("Location", "http://evil.example:1/steal")
            self.end_headers()
            return
        if self.path == "/big":
            body = b"a" * 50_000
            kind = "text/plain"
        elif self.path == "/bin":
            body, kind = b"\x00\x01", "application/octet-stream"
        else:
            body = (b"<html><head><script>var x=1;</script></head><body><h1>Tarifas</h1>"
                    b"<p>Taxi: R$ 40</p></body></html>")
            kind = "text/html; charset=utf-8"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_get_reads_allowed_hosts_only(site: str) -> None:
    t = http_get({"allow": [site], "max_bytes": 1000})

    def get(url: str) -> str:
        return t.call(t.check({"url": url})).text
    page = get(f"http://{site}/tarifas")
    assert page.startswith("HTTP 200") and "Taxi: R$ 40" in page and "var x" not in page
    assert get(f"http://{site}/big").endswith("(cut at 1000 bytes)")
    for url, match in [("http://localhost:1/", "not allowed"),
                       (f"http://{site}/away", "'evil.example' is not allowed"),
                       ("file:///etc/passwd", "only http and https"),
                       (f"http://user:pw@{site}/", "credentials"),
                       (f"http://{site}/bin", "not text")]:
        with pytest.raises(ToolFailed, match=match):
            get(url)


def test_a_typed_function_becomes_a_tool_with_its_schema_and_checks() -> None:
    def convert(amount: float, currency: Literal["USD", "EUR"] = "USD") -> str:
        """Converts reais to another currency.

        Args:
            amount: the value in reais
            currency: the target currency
        """
        return f"{amount / 5:.2f} {currency}"
    t = function_tool(convert)
    schema = t.schema()
    assert t.description == "Converts reais to another currency."
    assert schema["properties"]["amount"] == {"type": "number",
                                              "description": "the value in reais"}
    assert schema["properties"]["currency"]["enum"] == ["USD", "EUR"]
    assert schema["required"] == ["amount"]
    assert t.call(t.check({"amount": 50})).text == "10.00 USD"
    with pytest.raises(ToolFailed, match="currency"):
        t.check({"amount": 1, "currency": "BTC"})
    with pytest.raises(ToolFailed, match="sneaky: Extra inputs"):
        t.check({"amount": 1, "sneaky": True})

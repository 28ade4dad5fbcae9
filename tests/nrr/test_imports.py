"""Contract, invoice and rate imports: every bad row reported with its line, nothing written
then; a clean file upserted; importing it again changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path

import psycopg
import pytest

from core.registry import import_registry, read_registry_csv
from nrr.imports import import_file
from nrr.layouts import RevenueImportError, layout_text, read_file
from nrr.ledger import ledger_state, rebuild
from tests.nrr import fix_nrr as fx

DATA = Path(__file__).parent.parent / "data"


@pytest.fixture
def conn(db_url: str) -> Iterator[fx.Conn]:
    with psycopg.connect(db_url, autocommit=True) as connection:
        fx.reset(connection)
        import_registry(connection, read_registry_csv([DATA / "nrr_registry.csv"]))
        yield connection


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _count(conn: fx.Conn, table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def _import_all(conn: fx.Conn) -> list[tuple[int, int, int]]:
    results = [
        import_file(conn, kind, DATA / f"nrr_{kind}.csv")
        for kind in ("contracts", "invoices", "fx")
    ]
    return [(r.inserted, r.updated, r.unchanged) for r in results]


def test_clean_files_import_and_a_second_import_changes_nothing(conn: fx.Conn) -> None:
    assert _import_all(conn) == [(5, 0, 0), (9, 0, 0), (6, 0, 0)]
    stamps = conn.execute("SELECT max(imported_at) FROM contracts").fetchone()
    assert _import_all(conn) == [(0, 0, 5), (0, 0, 9), (0, 0, 6)]
    assert conn.execute("SELECT max(imported_at) FROM contracts").fetchone() == stamps
    assert (_count(conn, "contracts"), _count(conn, "invoice_lines"), _count(conn, "fx_rates")) == (
        5,
        9,
        6,
    )
    row = conn.execute(
        "SELECT kind, billing_period, unit, monthly_minimum, renewal FROM contracts"
        " WHERE contract_id = 'K-brew-aas'"
    ).fetchone()
    assert row is not None
    assert row[:3] == ("metered", "month", "m3")


def test_a_change_is_an_update_and_marks_the_ledger_stale(conn: fx.Conn, tmp_path: Path) -> None:
    _import_all(conn)
    rebuild(conn, "EUR", through=fx.month("2024-03"))
    text = (DATA / "nrr_fx.csv").read_text().replace("2024-02,GBP,1.160000", "2024-02,GBP,1.2")
    result = import_file(conn, "fx", _write(tmp_path, "fx.csv", text))
    assert (result.inserted, result.updated, result.unchanged) == (0, 1, 5)
    assert result.stale_since == fx.month("2024-02")
    state = ledger_state(conn)
    assert state is not None
    assert state.stale_since == fx.month("2024-02")
    assert rebuild(conn, "EUR", through=fx.month("2024-03")).since == fx.month("2024-02")


def test_rebuild_since_a_later_month_still_rebuilds_the_stale_months(
    conn: fx.Conn, tmp_path: Path
) -> None:
    """Issue 14.2: a contract re-imported with an earlier end marks the ledger stale from its
    start (2024-01); ``rebuild --since 2024-03`` used to rebuild March only and clear the
    marker, leaving February wrong while the next ``rebuild`` said "up to date"."""
    _import_all(conn)
    rebuild(conn, "EUR", through=fx.month("2024-03"))
    text = (DATA / "nrr_contracts.csv").read_text()
    earlier = text.replace("2024-01-01,2024-02-29,quarter", "2024-01-01,2024-01-31,quarter")
    assert earlier != text
    import_file(conn, "contracts", _write(tmp_path, "contracts.csv", earlier))
    result = rebuild(conn, "EUR", since=fx.month("2024-03"), through=fx.month("2024-03"))
    assert (result.since, result.asked_since) == (fx.month("2024-01"), fx.month("2024-03"))
    assert result.document()["rebuilt_from"] == "2024-01"
    incremental = _ledger_and_movements(conn)
    rebuild(conn, "EUR", through=fx.month("2024-03"), full=True)
    assert _ledger_and_movements(conn) == incremental
    assert fx.ledger(conn, "cast")["2024-02"] == D("754.00")  # the add-on only: 650 × 1.16
    assert rebuild(conn, "EUR", through=fx.month("2024-03")).since is None


def _ledger_and_movements(conn: fx.Conn) -> list[list[tuple[object, ...]]]:
    return [
        conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3, 4").fetchall()
        for table in ("mrr_ledger", "mrr_movements")
    ]


def test_bad_contract_rows_are_all_reported_with_line_numbers(
    conn: fx.Conn, tmp_path: Path
) -> None:
    header = (DATA / "nrr_contracts.csv").read_text().splitlines()[0]
    path = _write(
        tmp_path,
        "contracts.csv",
        "\n".join(
            [
                header,
                "ok,brew,maintenance,fixed,EUR,2024-01-01,,month,10,,,,,,",
                "bad kind,brew,maintenance,rental,EUR,2024-01-01,,month,10,,,,,,",
                "k3,brew,maintenance,fixed,EUR,2024-01-01,,month,,,,,,,",
                "k4,brew,aas,metered,EUR,2024-01-01,,month,10,0.02,m3,,,,",
                "k5,brew,aas,fixed,EURO,2024-13-01,,multi_year,10,,,,sometimes,,",
                "k6,brew,aas,fixed,EUR,2024-05-01,2024-04-30,year,-5,,,,,,",
                "ok,brew,maintenance,fixed,EUR,2024-01-01,,month,10,,,,,,",
                "k8,brew,aas,metered,EUR,2024-01-01,,quarter,,0.02,m3,,,,",
            ]
        )
        + "\n",
    )
    with pytest.raises(RevenueImportError) as caught:
        import_file(conn, "contracts", path)
    assert caught.value.errors == [
        f"{path}:3: contract_id: 'bad kind' is not an identifier ([A-Za-z0-9_.-], 1-64 characters)",
        f"{path}:3: kind: must be one of fixed, metered, addon, got 'rental'",
        f"{path}:4: fee: required for a fixed contract",
        f"{path}:5: fee: a metered contract has no fee (its floor is monthly_minimum)",
        f"{path}:6: currency: 'EURO' is not an ISO 4217 code (three capital letters)",
        f"{path}:6: start_date: '2024-13-01' is not a date (YYYY-MM-DD)",
        f"{path}:6: renewal: must be one of auto, manual, none, got 'sometimes'",
        f"{path}:7: fee: '-5' must be >= 0",
        f"{path}:8: duplicate contract_id 'ok' (first at line 2)",
        f"{path}:9: billing_period: a metered contract bills monthly (month or empty)",
    ]
    assert _count(conn, "contracts") == 0


def test_row_rules_after_the_columns(tmp_path: Path) -> None:
    header = (DATA / "nrr_contracts.csv").read_text().splitlines()[0]
    path = _write(
        tmp_path,
        "c.csv",
        header
        + "\nk1,brew,aas,fixed,EUR,2024-05-01,2024-04-30,multi_year,10,,,,,,"
        + "\nk2,brew,aas,addon,EUR,2024-05-01,,month,10,0.1,,,,,\n",
    )
    with pytest.raises(RevenueImportError) as caught:
        read_file("contracts", path)
    assert caught.value.errors == [
        f"{path}:2: term_months: required for a multi_year contract",
        f"{path}:2: end_date: 2024-04-30 is before start_date 2024-05-01",
        f"{path}:3: unit_price: only for metered contracts",
    ]


def test_header_problems_are_reported_on_line_1(tmp_path: Path) -> None:
    path = _write(tmp_path, "fx.csv", "month,currency,rte\n2024-01,GBP,1.1\n")
    with pytest.raises(RevenueImportError) as caught:
        read_file("fx", path)
    assert caught.value.errors == [
        f"{path}:1: unknown column 'rte' (columns of fx: month, currency, rate)",
        f"{path}:1: missing column 'rate'",
    ]


def test_bad_invoice_lines_and_references(conn: fx.Conn, tmp_path: Path) -> None:
    import_file(conn, "contracts", DATA / "nrr_contracts.csv")
    header = (DATA / "nrr_invoices.csv").read_text().splitlines()[0]
    path = _write(
        tmp_path,
        "invoices.csv",
        "\n".join(
            [
                header,
                "I1,1,brew,K-brew-aas,2024-01,,10,EUR,true,metered,,,",
                "I1,2,brew,,2024-01,,2,EUR,true,tax,,,",
                "I1,3,brew,,2024-01,,2,EUR,true,metered,,,",
                "I1,4,brew,K-cast-maint,2024-01,,2,EUR,true,fixed,,,",
                "I1,5,ghost,,2024-1,,x,EUR,maybe,fixed,,,",
                "I1,6,brew,K-none,2024-01,,2,EUR,true,fixed,,,",
                "I1,7,brew,K-brew-maint,2024-01,,2,EUR,true,metered,,,",
                "I2,1,ghost,,2024-01,,2,EUR,false,one_off,,,",
            ]
        )
        + "\n",
    )
    with pytest.raises(RevenueImportError) as caught:
        import_file(conn, "invoices", path)
    assert caught.value.errors == [
        f"{path}:3: recurring: a tax line cannot be recurring",
        f"{path}:4: contract_id: required on a recurring metered line (usage is per contract)",
        f"{path}:6: period: '2024-1' is not a month (YYYY-MM)",
        f"{path}:6: amount: 'x' is not a number",
        f"{path}:6: recurring: must be true or false, got 'maybe'",
    ]
    # once the rows themselves are valid, the references are checked against the database
    fixed = path.read_text().splitlines()
    del fixed[2:4]
    del fixed[3]
    path.write_text("\n".join(fixed) + "\n")
    with pytest.raises(RevenueImportError) as caught:
        import_file(conn, "invoices", path)
    assert caught.value.errors == [
        f"{path}:3: contract_id: 'K-cast-maint' belongs to account 'cast'",
        f"{path}:4: contract_id: 'K-none' is not imported (import contracts first)",
        f"{path}:5: kind: a recurring metered line on fixed contract 'K-brew-maint'",
        f"{path}:6: account_id: 'ghost' is not registered",
    ]
    assert _count(conn, "invoice_lines") == 0


def test_reporting_currency_rate_must_be_one(tmp_path: Path) -> None:
    path = _write(tmp_path, "fx.csv", "month,currency,rate\n2024-01,EUR,1.0\n2024-01,EUR,1\n")
    with pytest.raises(RevenueImportError, match="duplicate month, currency"):
        read_file("fx", path)
    path = _write(tmp_path, "fx.csv", "month,currency,rate\n2024-01,GBP,1.1\n2024-01,EUR,1.1\n")
    with pytest.raises(RevenueImportError) as caught:
        read_file("fx", path, reporting_currency="EUR")
    assert caught.value.errors == [f"{path}:3: rate: EUR is the reporting currency: rate 1"]
    assert len(read_file("fx", path, reporting_currency="USD").records) == 2


def test_layout_text_lists_every_column() -> None:
    text = layout_text()
    for name in ("monthly_minimum", "term_months", "recurring", "rate"):
        assert f"| {name} |" in text or f"| **{name}** |" in text

"""Contract, invoice and rate imports: every bad row reported with its line, nothing written
then; a clean file upserted; importing it again changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path

import psycopg
import pytest

from core.errors import ImportRejected, InputError
from core.registry import import_registry, read_registry_csv
from nrr.imports import import_file
from nrr.layouts import layout_text, read_file
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
    with pytest.raises(ImportRejected) as caught:
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


def test_figures_out_of_range_are_refused_with_their_line(tmp_path: Path) -> None:
    """Issue 14.3: a fee, amount or rate that imported fine (1e13, 1e30) made every later
    rebuild fail with "bigint out of range" and no line; 1e999999 failed in the database."""
    header = (DATA / "nrr_contracts.csv").read_text().splitlines()[0]
    contracts = _write(
        tmp_path,
        "contracts.csv",
        "\n".join(
            [
                header,
                "k1,brew,maintenance,fixed,EUR,2024-01-01,,month,1e13,,,,,,",
                "k2,brew,maintenance,fixed,EUR,2024-01-01,,month,1e999999,,,,,,",
                "k3,brew,aas,metered,EUR,2024-01-01,,month,,2e6,m3,1e12,,,",
                "k4,brew,maintenance,fixed,EUR,0001-01-01,,multi_year,10,,,,,99999999999,5000",
                "k5,brew,maintenance,fixed,EUR,2024-01-01,,month,0.0000000000001,,,,,,",
                "ok,brew,maintenance,fixed,EUR,2024-01-01,,month,999999999999.99,,,,,,",
            ]
        )
        + "\n",
    )
    with pytest.raises(ImportRejected) as caught:
        read_file("contracts", contracts)
    amounts = "(below 1,000,000,000,000 in absolute value)"
    assert caught.value.errors == [
        f"{contracts}:2: fee: '1e13' is out of range {amounts}",
        f"{contracts}:3: fee: '1e999999' is out of range {amounts}",
        f"{contracts}:4: unit_price: '2e6' is out of range (below 1,000,000 in absolute value)",
        f"{contracts}:4: monthly_minimum: '1e12' is out of range {amounts}",
        f"{contracts}:5: start_date: '0001-01-01' is out of range (years 1900 to 2999)",
        f"{contracts}:5: notice_days: '99999999999' is out of range (at most 3,650)",
        f"{contracts}:5: term_months: '5000' is out of range (at most 1,200)",
        f"{contracts}:6: fee: '0.0000000000001' has more than 12 decimal places",
    ]
    header = (DATA / "nrr_invoices.csv").read_text().splitlines()[0]
    invoices = _write(
        tmp_path,
        "invoices.csv",
        f"{header}\nI1,1,brew,,2024-01,,1e30,EUR,false,one_off,,,"
        "\nI1,99999999999,brew,,2024-01,,-1e999999,EUR,false,one_off,1e999999,,\n",
    )
    with pytest.raises(ImportRejected) as caught:
        read_file("invoices", invoices)
    assert caught.value.errors == [
        f"{invoices}:2: amount: '1e30' is out of range {amounts}",
        f"{invoices}:3: line_no: '99999999999' is out of range (at most 2,147,483,647)",
        f"{invoices}:3: amount: '-1e999999' is out of range {amounts}",
        f"{invoices}:3: quantity: '1e999999' is out of range "
        "(below 1,000,000,000,000,000 in absolute value)",
    ]
    rates = _write(tmp_path, "fx.csv", "month,currency,rate\n2024-01,GBP,1e30\n2024-02,GBP,1e-30\n")
    with pytest.raises(ImportRejected) as caught:
        read_file("fx", rates)
    assert caught.value.errors == [
        f"{rates}:2: rate: '1e30' is out of range (below 10,000 in absolute value)",
        f"{rates}:3: rate: '1e-30' has more than 12 decimal places",
    ]
    # trailing zeros beyond 12 places are no more precision: kept at 12
    path = _write(tmp_path, "ok.csv", "month,currency,rate\n2024-01,GBP,1.17000000000000000000\n")
    assert read_file("fx", path).records[0]["rate"] == D("1.170000000000")


def test_a_rebuild_stopped_by_a_huge_figure_names_the_contract(conn: fx.Conn) -> None:
    """Rows written past the import's ranges (or many huge contracts on one account) stop the
    rebuild with the largest amounts named, not a bare "bigint out of range"."""
    fx.contract(conn, "huge", "brew", "2024-01-01", fee="1e13")
    with pytest.raises(InputError, match=r"cannot hold .*contract 'huge' \(account 'brew'\)"):
        rebuild(conn, "EUR", through=fx.month("2024-02"))
    assert ledger_state(conn) is None


def test_a_contract_cannot_move_to_another_account(conn: fx.Conn, tmp_path: Path) -> None:
    """Issue 14.4: importing a contract_id again under another account moved the contract
    silently, its invoices staying on the old account."""
    _import_all(conn)
    text = (DATA / "nrr_contracts.csv").read_text()
    moved = text.replace("K-brew-mon,brew,", "K-brew-mon,cast,")
    path = _write(tmp_path, "contracts.csv", moved)
    with pytest.raises(ImportRejected) as caught:
        import_file(conn, "contracts", path)
    assert caught.value.errors == [
        f"{path}:4: account_id: contract 'K-brew-mon' is imported under account 'brew'; a "
        "contract cannot move to another account (its invoices stay there): end it and import "
        "the new account's contract under a new contract_id"
    ]
    row = conn.execute(
        "SELECT account_id FROM contracts WHERE contract_id = 'K-brew-mon'"
    ).fetchone()
    assert row == ("brew",)


def test_row_rules_after_the_columns(tmp_path: Path) -> None:
    header = (DATA / "nrr_contracts.csv").read_text().splitlines()[0]
    path = _write(
        tmp_path,
        "c.csv",
        header
        + "\nk1,brew,aas,fixed,EUR,2024-05-01,2024-04-30,multi_year,10,,,,,,"
        + "\nk2,brew,aas,addon,EUR,2024-05-01,,month,10,0.1,,,,,\n",
    )
    with pytest.raises(ImportRejected) as caught:
        read_file("contracts", path)
    assert caught.value.errors == [
        f"{path}:2: term_months: required for a multi_year contract",
        f"{path}:2: end_date: 2024-04-30 is before start_date 2024-05-01",
        f"{path}:3: unit_price: only for metered contracts",
    ]


def test_header_problems_are_reported_on_line_1(tmp_path: Path) -> None:
    path = _write(tmp_path, "fx.csv", "month,currency,rte\n2024-01,GBP,1.1\n")
    with pytest.raises(ImportRejected) as caught:
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
    with pytest.raises(ImportRejected) as caught:
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
    with pytest.raises(ImportRejected) as caught:
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
    with pytest.raises(ImportRejected, match="duplicate month, currency"):
        read_file("fx", path)
    path = _write(tmp_path, "fx.csv", "month,currency,rate\n2024-01,GBP,1.1\n2024-01,EUR,1.1\n")
    with pytest.raises(ImportRejected) as caught:
        read_file("fx", path, reporting_currency="EUR")
    assert caught.value.errors == [f"{path}:3: rate: EUR is the reporting currency: rate 1"]
    assert len(read_file("fx", path, reporting_currency="USD").records) == 2


def test_layout_text_lists_every_column() -> None:
    text = layout_text()
    for name in ("monthly_minimum", "term_months", "recurring", "rate"):
        assert f"| {name} |" in text or f"| **{name}** |" in text

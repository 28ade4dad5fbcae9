"""The monthly report (HTML figures == CSV figures, self-contained page) and the commands
(``--json`` prints one document, exit codes 0 / 1 / 2), on hand-worked sample files.

Sample files (tests/data/nrr_*.csv), figures in EUR:
  brew: Jan 443.55 (annual 2,400 / 12 + 35 + metered invoice 212.40 as a run rate: / 31 days
        × 30.4375 = 208.55), Feb 392.44 (invoiced minimum 150.00 / 29 × 30.4375 = 157.44),
        Mar 385.00 (no invoice, no telemetry: the minimum, 150.00).
  cast: Jan GBP 900 / 3 = 300 at 1.17 = 351.00; Feb (300 + 23,400 / 36 = 650) at 1.16 = 1,102.00;
        Mar 650 at 1.18 = 767.00.
  Feb bridge: start 794.55, expansion 760.50 (cast at Jan's rate: 950 × 1.17 = 1,111.50 - 351),
  contraction 51.11 (brew), fx -9.50 (1,102.00 - 1,111.50), end 1,494.44.
  MoM NRR (794.55 + 760.50 - 51.11) / 794.55 = 189.28 %, GRR 743.44 / 794.55 = 93.57 %.
  Attribution: an expansion alert on cast acknowledged 2024-02-10 (19 days before February's
  end) makes its 760.50 signal-influenced: NRR without it (794.55 + 760.50 - 760.50 - 51.11) /
  794.55 = 93.57 %; January has no movements (the ledger's opening month).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import psycopg
import pytest

from core.registry import import_registry, read_registry_csv
from nrr.headline import headline
from nrr.imports import import_file
from nrr.ledger import rebuild
from nrr.report import ATTRIBUTION_COLUMNS, build_report, write_report
from tests.nrr import fix_nrr as fx

DATA = Path(__file__).parent.parent / "data"
ROOT = Path(__file__).parent.parent.parent


def run(
    *args: str, db_url: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BASEWATCH_")}
    if db_url:
        environ["BASEWATCH_DATABASE_URL"] = db_url
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "basewatch", *args],
        env=environ,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class _Tables(HTMLParser):
    """Collects every ``<table data-csv>``: the CSV columns it shows (``data-columns``), its
    cells' data-value and shown text, and the page's visible text; and flags anything that
    would make the page not self-contained."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, str]]]] = {}
        self.columns: dict[str, list[str]] = {}
        self.current: str | None = None
        self.cell: list[str] | None = None
        self.value = ""
        self.outside: list[str] = []
        self.svgs = 0
        self.in_svg = 0
        self.text: list[str] = []  # visible text outside the charts
        self.widest = 0  # most columns of a table on the page

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag in ("script", "link", "iframe", "img"):
            self.outside.append(tag)
        for name in ("src", "href"):
            if found.get(name):
                self.outside.append(f"{tag} {name}")
        self.svgs += tag == "svg"
        self.in_svg += tag == "svg"
        if tag == "table" and found.get("data-csv"):
            self.current = found["data-csv"] or ""
            self.tables[self.current] = []
            self.columns[self.current] = (found.get("data-columns") or "").split(",")
            self.widest = max(self.widest, len(self.columns[self.current]))
        elif tag == "tr" and self.current and self.cell is None:
            self.tables[self.current].append([])
        elif tag == "td" and self.current:
            self.cell, self.value = [], found.get("data-value") or ""

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)
        if not self.in_svg:
            self.text.append(data)

    def handle_endtag(self, tag: str) -> None:
        self.in_svg -= tag == "svg"
        if tag == "td" and self.current and self.cell is not None:
            self.tables[self.current][-1].append((self.value, "".join(self.cell)))
            self.cell = None
        elif tag == "table":
            self.current = None


def read_page(html: Path) -> _Tables:
    page = _Tables()
    page.feed(html.read_text())
    return page


def assert_html_equals_csv(html: Path, folder: Path, charts: int = 4) -> dict[str, list[list[str]]]:
    """``charts``: the SVG charts expected (trend, MRR, movers, bridge waterfall; the cohort heat
    map with cohorts of 5 accounts or more, the attribution chart when alerts were measured).
    Every cell shown on the page is its CSV cell (``–`` for an empty one); returns the CSVs."""
    page = read_page(html)
    assert page.outside == []
    assert page.svgs == charts
    csv_files = sorted(p.name for p in folder.glob("*.csv"))
    assert sorted(page.tables) == csv_files
    figures: dict[str, list[list[str]]] = {}
    for name, rows in page.tables.items():
        with (folder / name).open(newline="") as handle:
            header, *from_csv = list(csv.reader(handle))
        shown_columns = [header.index(column) for column in page.columns[name]]
        body = [r for r in rows if r]
        expected = [[row[i] for i in shown_columns] for row in from_csv]
        assert [[value for value, _ in row] for row in body] == expected, name
        for row in body:
            for value, shown in row:
                assert shown.replace(",", "") == value.replace(",", "") or (
                    value == "" and shown == "–"
                )
        figures[name] = from_csv
    return figures


def figure_values(figures: dict[str, list[list[str]]]) -> dict[str, str]:
    """headline.csv as {figure key: value}."""
    return {key: value for key, _, value in figures["headline.csv"]}


@pytest.fixture
def sample(db_url: str) -> Iterator[fx.Conn]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        fx.reset(conn)
        import_registry(conn, read_registry_csv([DATA / "nrr_registry.csv"]))
        yield conn


def test_report_of_the_sample_files(sample: fx.Conn, tmp_path: Path) -> None:
    for kind in ("contracts", "invoices", "fx"):
        import_file(sample, kind, DATA / f"nrr_{kind}.csv")
    rebuild(sample, "EUR", through=fx.month("2024-03"))
    fx.alert(sample, "cast", "expansion", "2024-02-01", status="acknowledged",
             acknowledged="2024-02-10")  # fmt: skip
    written = write_report(build_report(sample, "EUR", fx.month("2024-02")), tmp_path)
    figures = assert_html_equals_csv(written.html, tmp_path, charts=5)
    headline = figure_values(figures)
    assert headline["mrr_total_usage_inclusive"] == "1494.44"
    assert (headline["mrr_fixed"], headline["mrr_metered"]) == ("1337.00", "157.44")
    assert (headline["mom_nrr_pct"], headline["mom_grr_pct"]) == ("189.28", "93.57")
    assert headline["mom_cohort_size"] == "2"
    assert (headline["t12m_nrr_pct"], headline["t12m_cohort_size"]) == ("", "0")
    assert [(line, amount) for line, _, amount in figures["bridge.csv"]] == [
        ("start", "794.55"),
        ("new", "0.00"),
        ("reactivation", "0.00"),
        ("expansion", "760.50"),
        ("contraction", "-51.11"),
        ("churn", "0.00"),
        ("fx", "-9.50"),
        ("end", "1494.44"),
    ]
    header = ATTRIBUTION_COLUMNS
    attribution = [dict(zip(header, row, strict=True)) for row in figures["attribution.csv"]]
    assert [(r["basis"], r["period"], r["alerts"]) for r in attribution] == [
        ("month", "2024-02", "measured"),
        ("trailing_12_months", "2024-02", "measured"),
    ]
    february = attribution[0]
    assert (february["expansion"], february["influenced_expansion"]) == ("760.50", "760.50")
    assert (february["influenced_accounts"], february["flagged_churn"]) == ("1", "0.00")
    assert (february["nrr_pct"], february["nrr_without_influenced_pct"]) == ("189.28", "93.57")
    assert attribution[1]["nrr_pct"] == ""  # no T12M cohort: absent, with or without
    assert attribution[1]["nrr_without_influenced_pct"] == attribution[1]["removed_expansion"] == ""
    assert "association" in written.html.read_text()
    reconciliation = {row[0]: row[1:3] for row in figures["reconciliation.csv"]}
    assert reconciliation["invoiced metered (recurring)"] == ["1", "150.00"]
    assert reconciliation["invoiced tax"] == ["1", "37.00"]
    assert reconciliation["metered MRR from invoices"] == ["1", "157.44"]  # the run rate


def test_the_opening_month_has_no_bridge_and_absent_figures_are_null(
    sample: fx.Conn, tmp_path: Path
) -> None:
    """Issue 14.5: the ledger's opening month (2024-01) showed a bridge from 0.00 to 0.00 while
    MRR was 794.55; a trailing window without a cohort left its money keys out."""
    for kind in ("contracts", "invoices", "fx"):
        import_file(sample, kind, DATA / f"nrr_{kind}.csv")
    rebuild(sample, "EUR", through=fx.month("2024-03"))
    document = headline(sample, "EUR", fx.month("2024-01")).document()
    assert document["mrr"]["total"] == "794.55"
    assert document["bridge"] == {
        "start": None,
        "new": None,
        "reactivation": None,
        "expansion": None,
        "contraction": None,
        "churn": None,
        "fx": None,
        "end": None,
        "reconciles": None,
    }
    assert document["month_over_month"]["nrr_pct"] is None
    assert document["month_over_month"]["start_mrr"] is None
    assert document["month_over_month"]["cohort_size"] is None
    for window in ("trailing_12_months", "trailing_3_months"):
        assert document[window] == {
            "basis": "constant currency at the rates of the window's first month",
            "nrr_pct": None,
            "grr_pct": None,
            "logo_retention_pct": None,
            "cohort_size": 0,
            "start_mrr": None,
            "end_mrr": None,
        }
    assert "opening month" in headline(sample, "EUR", fx.month("2024-01")).text()
    written = write_report(build_report(sample, "EUR", fx.month("2024-01")), tmp_path)
    figures = assert_html_equals_csv(written.html, tmp_path, charts=3)  # no waterfall
    assert [amount for _, _, amount in figures["bridge.csv"]] == [""] * 8
    assert figures["trend.csv"][0][4:7] == ["", "", ""]  # no MoM NRR, GRR, cohort
    # the next month has its bridge, from the opening month's MRR
    february = headline(sample, "EUR", fx.month("2024-02")).document()["bridge"]
    assert (february["start"], february["end"]) == ("794.55", "1494.44")


def test_the_page_is_written_for_a_reader(sample: fx.Conn, tmp_path: Path) -> None:
    """Issue 14.8: the headline as sentences and labelled figures, never a raw key; tax never
    called one-off."""
    for kind in ("contracts", "invoices", "fx"):
        import_file(sample, kind, DATA / f"nrr_{kind}.csv")
    rebuild(sample, "EUR", through=fx.month("2024-03"))
    written = write_report(build_report(sample, "EUR", fx.month("2024-02")), tmp_path)
    page = read_page(written.html)
    visible = " ".join(" ".join(page.text).split())
    assert (
        "In February 2024, usage-inclusive MRR was EUR 1,494.44 across 2 accounts: EUR 1,337.00 "
        "of fixed fees and EUR 157.44 of metered usage" in visible
    )
    assert (
        "Month over month, the 2 accounts with MRR in January 2024 (EUR 794.55) kept 189.28 % "
        "of it with expansion (net revenue retention) and 93.57 % without" in visible
    )
    assert "No account had MRR in February 2023, so there is no trailing-12-month" in visible
    assert "Net revenue retention, month over month (%)" in visible
    keys: set[str] = set()
    for path in tmp_path.glob("*.csv"):
        header, *rows = csv.reader(path.read_text().splitlines())
        keys |= {name for name in [*header, *(row[0] for row in rows)] if "_" in name}
    assert {"mom_nrr_pct", "t12m_cohort_size", "mrr_total_usage_inclusive"} <= keys
    assert [key for key in sorted(keys) if key in visible] == []
    items = [
        row[0] for row in csv.reader((tmp_path / "reconciliation.csv").read_text().splitlines())
    ]
    assert "invoiced tax" in items
    assert [item for item in items if "tax" in item and "one-off" in item] == []


def test_the_heat_map_shows_only_cohorts_big_enough(sample: fx.Conn, tmp_path: Path) -> None:
    """Issue 14.8: a cohort of one or two new accounts is one customer's story: the heat map
    draws cohorts of at least 5 accounts and says which it left out."""
    fx.contract(sample, "open", "brew", "2024-01-01", fee="100")
    for number in range(7):
        name = f"new-{number}"
        fx.account(sample, name)
        start = "2024-02-01" if number < 6 else "2024-03-01"
        fx.contract(sample, f"k-{number}", name, start, fee=str(100 + number))
    rebuild(sample, "EUR", since=fx.month("2024-01"), through=fx.month("2024-04"), full=True)
    report = build_report(sample, "EUR", fx.month("2024-04"))
    heat_map = report.charts["cohorts"]
    assert "2024-02 (6)" in heat_map
    assert "2024-03" not in heat_map
    assert report.chart_notes["cohorts"].startswith(
        "1 of the 2 new-account cohorts have fewer than 5 accounts and are left out"
    )
    assert [row[:2] for row in report.table("cohorts").rows] == [("2024-02", "6"), ("2024-03", "1")]
    written = write_report(report, tmp_path)
    assert_html_equals_csv(written.html, tmp_path, charts=5)
    assert report.chart_notes["cohorts"] in " ".join(read_page(written.html).text)


def test_report_of_a_generated_history(sample: fx.Conn, tmp_path: Path) -> None:
    files = fx.history_files(sample, tmp_path)
    for kind in ("contracts", "invoices", "fx"):
        import_file(sample, kind, files[kind])
    rebuild(sample, "EUR", through=fx.month("2024-06"))
    out = tmp_path / "report"
    written = write_report(build_report(sample, "EUR", fx.month("2024-06")), out)
    figures = assert_html_equals_csv(written.html, out)  # cohorts of 1 or 2: no heat map
    page = read_page(written.html)
    assert "No heat map: none of the 4 new-account cohorts" in " ".join(page.text)
    assert page.widest <= 12  # wide CSVs (attribution: 20 columns) show what fits the page
    assert len(figures["trend.csv"]) == 24
    assert figures["trend.csv"][-1][7] != ""  # T12M NRR present in the last month
    dimensions = {row[0] for row in figures["breakdowns.csv"]}
    assert dimensions == {"industry", "region", "csm", "size", "product_line"}
    assert all(int(row[3]) > 0 for row in figures["breakdowns.csv"])
    assert figures["cohorts.csv"]
    # no alerts at all: the attribution is there, its attributed figures absent, not zeros
    columns = ATTRIBUTION_COLUMNS
    for row in figures["attribution.csv"]:
        found = dict(zip(columns, row, strict=True))
        assert (found["alerts"], found["note"]) == ("not measured", "no alerts recorded")
        assert found["influenced_expansion"] == found["flagged_churn"] == ""
        assert found["nrr_without_influenced_pct"] == ""
    assert len(figures["attribution.csv"]) == 13


def test_commands_print_one_json_document_and_exit_codes(
    db_url: str,
    sample: fx.Conn,
    tmp_path: Path,
) -> None:
    empty = run("nrr", "show", "--json", db_url=db_url)
    assert (empty.returncode, empty.stdout) == (1, "")
    assert empty.stderr.strip().splitlines() == [
        "basewatch: error: the MRR ledger is empty: run basewatch nrr rebuild"
    ]
    assert run("nrr", "show", "--month", "2024-13", db_url=db_url).returncode == 2
    assert run("nrr", "report", db_url=db_url).returncode == 2  # --month is required

    bad = tmp_path / "fx.csv"
    bad.write_text("month,currency,rate\n2024-01,GBP,-1\n")
    result = run("import", "fx", str(bad), "--json", db_url=db_url)
    assert (result.returncode, result.stdout) == (1, "")
    assert f"{bad}:2: rate: '-1' must be > 0" in result.stderr

    for kind in ("contracts", "invoices", "fx"):
        result = run("import", kind, str(DATA / f"nrr_{kind}.csv"), "--json", db_url=db_url)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["imported"] is True
    again = run("import", "fx", str(DATA / "nrr_fx.csv"), "--json", db_url=db_url)
    assert json.loads(again.stdout)["unchanged"] == 6

    result = run("nrr", "rebuild", "--through", "2024-03", "--json", db_url=db_url)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["rebuilt_from"] == "2024-01"

    result = run("nrr", "show", "--month", "2024-02", "--json", db_url=db_url)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["mrr"]["total"] == "1494.44"
    assert shown["bridge"]["fx"] == "-9.50"
    assert shown["bridge"]["reconciles"] is True
    assert shown["month_over_month"]["nrr_pct"] == 189.28
    assert shown["trailing_12_months"]["nrr_pct"] is None
    signals = shown["attribution"]
    assert (signals["window_days"], signals["alerts"]["count"]) == (90, 0)
    assert signals["month"]["expansion"] == "760.50"
    assert (signals["month"]["status"], signals["month"]["influenced_expansion"]) == (
        "not measured",
        None,
    )

    text = run("nrr", "show", db_url=db_url)
    assert text.returncode == 0, text.stderr
    assert "NRR 2024-03" in text.stdout
    assert "usage-inclusive" in text.stdout
    assert "signal attribution: not measured (no alerts recorded)" in text.stdout

    out = tmp_path / "report"
    result = run("nrr", "report", "--month", "2024-02", "--out", str(out), "--json", db_url=db_url)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert Path(document["html"]).exists()
    assert document["headline"]["mrr"]["total"] == "1494.44"
    assert_html_equals_csv(Path(document["html"]), out)

    no_one = run("nrr", "report", "--month", "2024-02", "--out", str(out), "--email", db_url=db_url)
    assert (no_one.returncode, no_one.stdout) == (1, "")
    assert "BASEWATCH_NRR_REPORT_RECIPIENTS" in no_one.stderr
    recipients = {"BASEWATCH_NRR_REPORT_RECIPIENTS": "cfo@example.test"}
    for expected in (1, 0):  # the second run finds the month's email already queued
        emailed = run(
            "nrr", "report", "--month", "2024-02", "--out", str(out), "--email", "--json",
            db_url=db_url, env=recipients,
        )  # fmt: skip
        assert emailed.returncode == 0, emailed.stderr
        assert json.loads(emailed.stdout)["email"] == {
            "recipients": ["cfo@example.test"],
            "enqueued": expected,
        }
    queued = sample.execute(
        "SELECT recipient, subject, jsonb_array_length(payload -> 'attachments') FROM outbox"
        " WHERE dedup_key = 'nrr-report:2024-02:cfo@example.test'"
    ).fetchall()
    assert queued == [("cfo@example.test", "[basewatch] NRR report 2024-02", 9)]

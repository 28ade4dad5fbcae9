"""Registry CSV import: all rows valid or nothing written, with line numbers for bad rows."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from core.errors import ImportRejected, InputError
from core.registry import import_registry, read_registry_csv

DATA = Path(__file__).parent.parent / "data"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_mixed_file_imports_every_kind(db_url: str) -> None:
    batch = read_registry_csv([DATA / "registry_mixed.csv"])
    assert batch.count() == {"csm": 1, "account": 1, "asset": 1, "component": 1}
    with psycopg.connect(db_url) as conn:
        import_registry(conn, batch)
        asset = conn.execute(
            "SELECT account_id, model, rated_power_kw, installed_on FROM assets"
            " WHERE asset_id = 'acme-c1'"
        ).fetchone()
        component = conn.execute(
            "SELECT rated_life_hours, installed_at_running_hours FROM components"
            " WHERE asset_id = 'acme-c1'"
        ).fetchone()
    assert asset == ("acme", "GA55", Decimal("55"), dt.date(2023, 4, 1))
    assert component == (Decimal("2000"), Decimal("1500"))


def test_kind_per_file_is_detected_from_the_header(tmp_path: Path, db_url: str) -> None:
    csms = _write(tmp_path, "csms.csv", "csm_id,name,email\nc9,Lee,lee@example.com\n")
    accounts = _write(tmp_path, "accounts.csv", "account_id,name,csm_id\nbeta,Beta Ltd,c9\n")
    assets = _write(tmp_path, "assets.csv", "asset_id,account_id,model\nbeta-1,beta,GA30\n")
    batch = read_registry_csv([assets, accounts, csms])  # parents may come later in the list
    with psycopg.connect(db_url) as conn:
        import_registry(conn, batch)
        assert conn.execute("SELECT csm_id FROM accounts WHERE account_id = 'beta'").fetchone() == (
            "c9",
        )


def test_bad_rows_are_all_reported_with_line_numbers(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "assets.csv",
        "asset_id,account_id,rated_power_kw,installed_on\n"
        "ok-1,acme,55,2024-01-01\n"
        "bad id,acme,55,2024-01-01\n"
        "ok-2,acme,-3,2024-01-01\n"
        "ok-3,acme,30,01/02/2024\n"
        "ok-1,acme,55,2024-01-01\n",
    )
    with pytest.raises(ImportRejected) as caught:
        read_registry_csv([path])
    errors = caught.value.errors
    assert [e.split(": ", 1)[0] for e in errors] == [
        f"{path}:3",
        f"{path}:4",
        f"{path}:5",
        f"{path}:6",
    ]
    assert "asset_id" in errors[0]
    assert "rated_power_kw" in errors[1]
    assert "installed_on" in errors[2]
    assert "duplicate" in errors[3]


def test_unknown_reference_writes_nothing(tmp_path: Path, db_url: str) -> None:
    path = _write(
        tmp_path,
        "assets.csv",
        "asset_id,account_id\nfirst-ok,acme\norphan-1,nobody\n",
    )
    batch = read_registry_csv([path])
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO accounts (account_id, name) VALUES ('acme', 'Acme') ON CONFLICT DO NOTHING"
        )
        conn.commit()
        with pytest.raises(ImportRejected, match="nobody"):
            import_registry(conn, batch)
        conn.rollback()
        row = conn.execute("SELECT count(*) FROM assets WHERE asset_id = 'first-ok'").fetchone()
    assert row == (0,)


def test_unrecognised_header_says_what_is_expected(tmp_path: Path) -> None:
    path = _write(tmp_path, "x.csv", "foo,bar\n1,2\n")
    with pytest.raises(InputError, match="matches no registry file layout"):
        read_registry_csv([path])

"""History import from CSV: telemetry (wide or long) and events, streamed in constant memory.

Every row goes through the same checks as an MQTT message (identifiers, finite numbers,
timestamps not in the future, the asset registered under its account) and the same writer, so
a bad row becomes a dead letter naming the file and line, and importing a file twice adds
nothing.

Layouts (options of ``basewatch import telemetry``):

- wide: a time column and one column per metric; the asset comes from ``--asset`` (one asset
  per file) or ``--asset-column``. An empty cell is a metric not measured in that row.
- long: columns time, asset, metric, value (names set by options); consecutive rows of the same
  asset and time form one reading.

Time: ISO 8601 / RFC 3339 (naive times are read in ``--timezone``, default UTC), epoch seconds
or milliseconds, or a count of ``hours``/``minutes``/``seconds``/``days`` (or run cycles) after
``--time-origin``. Files may be gzip-compressed (``.gz``); the delimiter is detected, or given
(``whitespace`` for space-separated files); ``--no-header --columns a,b,...`` names the columns of
a file without a header. ``--series-end-event KIND`` records an event of that kind at the last
reading of every asset (run-to-failure data sets, where a series ends at its failure).
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import itertools
import math
import time
import zoneinfo
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from core import registry
from core.db import connect
from core.errors import ConfigError, InputError, InvalidPayload
from core.ids import is_identifier
from ingest.decode import Decoded, Event, Limits, Reading, parse_time
from ingest.messages import Message
from ingest.store import BatchWriter
from ingest.topics import Topic

UTC = dt.UTC
TIME_UNITS = {"seconds": 1.0, "minutes": 60.0, "hours": 3600.0, "days": 86400.0, "cycles": 3600.0}
TIME_FORMATS = ("auto", "iso", "epoch_s", "epoch_ms", *TIME_UNITS)
TIME_COLUMN_GUESSES = ("time", "timestamp", "datetime", "ts", "date_time", "date")
BATCH_READINGS = 5000
PROGRESS_INTERVAL_S = 2.0
UNKNOWN_ACCOUNT = "-"


@dataclass(frozen=True)
class CsvLayout:
    """How to read a CSV file (see the module docstring)."""

    format: str = "wide"
    delimiter: str = ""  # "" detects; "whitespace" splits on runs of blanks
    header: bool = True
    columns: tuple[str, ...] = ()
    time_column: str = ""
    time_format: str = "auto"
    time_origin: dt.datetime | None = None
    timezone: str = "UTC"
    asset: str = ""
    asset_column: str = ""
    asset_prefix: str = ""
    metric_column: str = "metric"
    value_column: str = "value"
    ignore: frozenset[str] = frozenset()
    rename: tuple[tuple[str, str], ...] = ()
    account: str = ""  # register unknown assets under this account
    max_past_days: int = 0  # 0: no limit for history
    series_end_event: str = ""
    # events only
    kind: str = ""
    kind_column: str = "kind"
    component_column: str = "component"
    code_column: str = "code"


@dataclass
class ImportResult:
    rows: int = 0
    readings: int = 0
    values: int = 0
    events: int = 0
    dead_letters: int = 0
    seconds: float = 0.0
    assets: set[str] = field(default_factory=set)

    def document(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "readings": self.readings,
            "values": self.values,
            "events": self.events,
            "dead_letters": self.dead_letters,
            "assets": len(self.assets),
            "seconds": round(self.seconds, 2),
            "rows_per_second": round(self.rows / self.seconds) if self.seconds else None,
        }


class _Progress:
    def __init__(self, raw: IO[bytes], total: int, report: Callable[[str], None] | None) -> None:
        self._raw, self._total, self._report = raw, total, report
        self._started = self._last = time.monotonic()

    def tick(self, rows: int) -> None:
        now = time.monotonic()
        if self._report is None or now - self._last < PROGRESS_INTERVAL_S:
            return
        self._last = now
        share = f"{100 * self._raw.tell() / self._total:5.1f}% " if self._total else ""
        self._report(f"  {share}{rows:,} rows, {rows / (now - self._started):,.0f} rows/s")


def _open_text(path: Path) -> tuple[IO[bytes], IO[str]]:
    try:
        raw = cast(IO[bytes], path.open("rb"))
    except OSError as exc:
        raise InputError(f"{path}: cannot open: {exc.strerror}") from exc
    binary = cast(IO[bytes], gzip.GzipFile(fileobj=raw)) if path.suffix == ".gz" else raw
    return raw, io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")


def _rows(text: IO[str], layout: CsvLayout) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of every data line, header excluded."""
    if layout.delimiter == "whitespace":
        for number, line in enumerate(text, 1):
            if line.strip():
                yield number, line.split()
        return
    delimiter = layout.delimiter
    lines: Iterator[str] = text
    if not delimiter:
        sample = text.read(65536)
        sample += text.readline()  # end on a whole line
        try:
            delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = ","
        lines = itertools.chain(io.StringIO(sample), text)
    reader = csv.reader(lines, delimiter=delimiter)
    for cells in reader:
        if cells and any(c.strip() for c in cells):
            yield reader.line_num, cells


class _Timestamps:
    """Parses the time cells of one layout."""

    def __init__(self, layout: CsvLayout, limits: Limits, now: dt.datetime) -> None:
        self.layout, self.limits, self.now = layout, limits, now
        try:
            self.zone = zoneinfo.ZoneInfo(layout.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigError("--timezone", f"unknown time zone {layout.timezone!r}") from None
        self._cache: dict[str, dt.datetime] = {}
        self.latest = now + dt.timedelta(seconds=limits.max_future_s)
        self.earliest = max(
            dt.datetime(1, 1, 2, tzinfo=UTC),
            now - dt.timedelta(days=min(limits.max_past_days, 700_000)),
        )
        if layout.time_format in TIME_UNITS and layout.time_origin is None:
            raise ConfigError(
                "--time-origin",
                f"--time-format {layout.time_format} counts "
                "from an origin: give --time-origin (e.g. 2020-01-01T00:00:00Z)",
            )

    def parse(self, cell: str) -> dt.datetime:
        """The cell's time, checked against the window; repeated cells (the same hour for
        many assets) are parsed once."""
        cached = self._cache.get(cell)
        if cached is not None:
            return cached
        parsed = self._parse(cell.strip())
        if len(self._cache) >= 4096:
            self._cache.clear()
        self._cache[cell] = parsed
        return parsed

    def _parse(self, text: str) -> dt.datetime:
        fmt = self.layout.time_format
        value: object
        if fmt in TIME_UNITS:
            assert self.layout.time_origin is not None
            try:
                amount = float(text)
            except ValueError:
                raise InvalidPayload("time", f"{text!r} is not a number of {fmt}") from None
            if not math.isfinite(amount) or abs(amount) > 1e9:
                raise InvalidPayload("time", f"{text!r} is not a number of {fmt}")
            value = self.layout.time_origin + dt.timedelta(seconds=amount * TIME_UNITS[fmt])
            return self._check(value)
        if fmt in {"epoch_s", "epoch_ms"} or (fmt == "auto" and _is_number(text)):
            try:
                number = float(text)
            except ValueError:
                raise InvalidPayload("time", f"{text!r} is not an epoch time") from None
            value = (
                number * 1000 if fmt == "epoch_s" or (fmt == "auto" and number < 1e11) else number
            )
            return parse_time(value, self.now, self.limits, field="time")
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            raise InvalidPayload("time", f"{text!r} is not an ISO 8601 time") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=self.zone)
        return self._check(parsed.astimezone(UTC))

    def _check(self, time: dt.datetime) -> dt.datetime:
        if time > self.latest:
            raise InvalidPayload(
                "time",
                f"{time.isoformat()} is more than {self.limits.max_future_s} s in the future",
            )
        if time < self.earliest:
            raise InvalidPayload(
                "time",
                f"{time.isoformat()} is more than {self.limits.max_past_days} days in the past",
            )
        return time


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _metrics(names: list[str], cells: list[str], indexes: list[int]) -> dict[str, float]:
    """The row's metric values; the fast path converts all cells at once and diagnoses a
    failure cell by cell."""
    try:
        values = [float(cells[i]) for i in indexes]
    except ValueError:
        metrics = {names[i]: _number(cells[i], names[i]) for i in indexes if cells[i].strip()}
    else:
        if all(map(math.isfinite, values)):
            return dict(zip([names[i] for i in indexes], values, strict=True))
        metrics = {names[i]: _number(cells[i], names[i]) for i in indexes}
    if not metrics:
        raise InvalidPayload("", "no metric values in this row")
    return metrics


def _number(cell: str, column: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise InvalidPayload(column, f"{cell[:40]!r} is not a number") from None
    if not math.isfinite(value):
        raise InvalidPayload(column, "is not a finite number")
    return value


class _Importer:
    """Shared machinery: asset resolution, batching through the writer, dead letters."""

    def __init__(
        self,
        database_url: str,
        path: Path,
        layout: CsvLayout,
        limits: Limits,
        progress: Callable[[str], None] | None,
    ) -> None:
        if layout.account and not is_identifier(layout.account):
            raise ConfigError("--account", f"{layout.account!r} is not an identifier")
        self.path, self.layout, self.progress_report = path, layout, progress
        self.limits = Limits(
            limits.max_payload_bytes,
            limits.max_items,
            limits.max_metrics,
            limits.max_future_s,
            layout.max_past_days or 365 * 1000,
        )
        self.now = dt.datetime.now(UTC)
        self.times = _Timestamps(layout, self.limits, self.now)
        self.writer = BatchWriter(
            database_url, auto_register=bool(layout.account), application_name="basewatch-import"
        )
        self.database_url = database_url
        self.owners: dict[str, str] = {}
        self.result = ImportResult()
        self.batch: list[Message] = []
        self.batch_items = 0
        self.topic = f"file:{path}"
        self.last_seen: dict[str, dt.datetime] = {}

    def target(self, asset_id: str) -> Topic:
        owner = self.owners.get(asset_id)
        if owner is None:
            with connect(self.database_url) as conn:
                owner = registry.asset_owners(conn, [asset_id]).get(asset_id)
            owner = owner or self.layout.account or UNKNOWN_ACCOUNT
            self.owners[asset_id] = owner
        return Topic(owner, asset_id, "telemetry")

    def asset_of(self, cells: dict[str, str]) -> str:
        layout = self.layout
        if layout.asset:
            return layout.asset
        raw = cells.get(layout.asset_column, "").strip()
        asset = f"{layout.asset_prefix}{raw}"
        if not raw or not is_identifier(asset):
            raise InvalidPayload(
                layout.asset_column,
                f"{raw[:70]!r} is not an asset identifier ([A-Za-z0-9_.-]{{1,64}})",
            )
        return asset

    def add(self, message: Message, items: int) -> None:
        self.batch.append(message)
        self.batch_items += items
        if self.batch_items >= BATCH_READINGS:
            self.flush()

    def reject(self, line: int, cells: list[str], reason: str) -> None:
        buffer = io.StringIO()
        csv.writer(buffer).writerow(cells)
        message = Message(
            self.topic,
            buffer.getvalue().rstrip("\r\n").encode(),
            self.now,
            None,
            Decoded([], [], []),
            topic_error=f"line {line}: {reason}",
            source="import",
            line=line,
        )
        self.add(message, 1)

    def flush(self) -> None:
        if not self.batch:
            return
        stats = self.writer.write(self.batch)
        self.result.readings += stats.readings
        self.result.values += stats.values
        self.result.events += stats.events
        self.result.dead_letters += stats.dead_letters
        self.batch = []
        self.batch_items = 0

    def close(self) -> None:
        self.writer.close()


def _header(rows: Iterator[tuple[int, list[str]]], layout: CsvLayout, path: Path) -> list[str]:
    if layout.header:
        try:
            _, names = next(rows)
        except StopIteration:
            raise InputError(f"{path}: empty file") from None
        names = [n.strip() for n in names]
    else:
        if not layout.columns:
            raise ConfigError("--columns", "a file without a header needs --columns a,b,...")
        names = list(layout.columns)
    renames = dict(layout.rename)
    return [renames.get(n, n) for n in names]


def _guess_time_column(names: list[str], layout: CsvLayout, path: Path) -> str:
    if layout.time_column:
        if layout.time_column not in names:
            raise InputError(
                f"{path}: no column {layout.time_column!r} (columns: {', '.join(names)})"
            )
        return layout.time_column
    for guess in TIME_COLUMN_GUESSES:
        for name in names:
            if name.lower() == guess:
                return name
    raise InputError(
        f"{path}: no time column found; name it with --time-column (columns: {', '.join(names)})"
    )


def import_telemetry(
    database_url: str,
    path: Path,
    layout: CsvLayout,
    limits: Limits,
    progress: Callable[[str], None] | None = None,
) -> ImportResult:
    """Stream a telemetry CSV file into the database (see the module docstring)."""
    if layout.format not in ("wide", "long"):
        raise ConfigError("--format", "must be wide or long")
    if not layout.asset and not layout.asset_column:
        raise ConfigError("--asset", "name the asset (--asset) or its column (--asset-column)")
    if layout.asset and not is_identifier(layout.asset):
        raise ConfigError("--asset", f"{layout.asset!r} is not an identifier")
    reader = _wide if layout.format == "wide" else _long

    def body(
        importer: _Importer, rows: _Rows, names: list[str], time_column: str, meter: _Progress
    ) -> None:
        reader(importer, rows, names, time_column, meter)
        _series_end_events(importer)

    return _stream(database_url, path, layout, limits, progress, body)


_Rows = Iterator[tuple[int, list[str]]]
_Body = Callable[["_Importer", _Rows, list[str], str, "_Progress"], None]


def _stream(
    database_url: str,
    path: Path,
    layout: CsvLayout,
    limits: Limits,
    progress: Callable[[str], None] | None,
    body: _Body,
) -> ImportResult:
    """Open the file, read its header, run ``body`` over its rows, write what is left."""
    started = time.monotonic()
    raw, text = _open_text(path)
    importer = _Importer(database_url, path, layout, limits, progress)
    try:
        with raw, text:
            rows = _rows(text, layout)
            names = _header(rows, layout, path)
            time_column = _guess_time_column(names, layout, path)
            body(importer, rows, names, time_column, _Progress(raw, path.stat().st_size, progress))
            importer.flush()
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read past row {importer.result.rows}: {exc}") from exc
    finally:
        importer.close()
    importer.result.seconds = time.monotonic() - started
    return importer.result


def _metric_columns(names: list[str], layout: CsvLayout, skip: set[str], path: Path) -> list[int]:
    chosen = [i for i, n in enumerate(names) if n not in skip and n not in layout.ignore]
    bad = [names[i] for i in chosen if not is_identifier(f"{names[i]}")]
    if bad:
        raise InputError(
            f"{path}: column(s) {', '.join(repr(b) for b in bad)} are not metric "
            "names ([A-Za-z0-9_.-]{1,64}); skip them with --ignore or rename them "
            "with --rename old=new"
        )
    if not chosen:
        raise InputError(f"{path}: no metric columns")
    return chosen


def _wide(
    importer: _Importer,
    rows: Iterator[tuple[int, list[str]]],
    names: list[str],
    time_column: str,
    meter: _Progress,
) -> None:
    layout = importer.layout
    skip = {time_column, layout.asset_column}
    metric_index = _metric_columns(names, layout, skip, importer.path)
    time_index = names.index(time_column)
    asset_index = names.index(layout.asset_column) if layout.asset_column else -1
    if layout.asset_column and layout.asset_column not in names:
        raise InputError(f"{importer.path}: no column {layout.asset_column!r}")
    width = len(names)
    result = importer.result
    for line, cells in rows:
        result.rows += 1
        if result.rows % 10000 == 0:
            meter.tick(result.rows)
        try:
            if len(cells) != width:
                raise InvalidPayload("", f"{len(cells)} fields, the header has {width}")
            asset = layout.asset or importer.asset_of({layout.asset_column: cells[asset_index]})
            when = importer.times.parse(cells[time_index])
            metrics = _metrics(names, cells, metric_index)
        except InvalidPayload as exc:
            importer.reject(line, cells, exc.reason)
            continue
        _emit(importer, (asset, when), metrics, line)


def _long(
    importer: _Importer,
    rows: Iterator[tuple[int, list[str]]],
    names: list[str],
    time_column: str,
    meter: _Progress,
) -> None:
    layout = importer.layout
    for column in (layout.metric_column, layout.value_column):
        if column not in names:
            raise InputError(
                f"{importer.path}: no column {column!r}; name it with "
                "--metric-column / --value-column"
            )
    index = {n: i for i, n in enumerate(names)}
    time_index, metric_index = index[time_column], index[layout.metric_column]
    value_index = index[layout.value_column]
    result = importer.result
    current: tuple[str, dt.datetime] | None = None
    metrics: dict[str, float] = {}
    first_line = 0
    for line, cells in rows:
        result.rows += 1
        if result.rows % 10000 == 0:
            meter.tick(result.rows)
        try:
            if len(cells) != len(names):
                raise InvalidPayload("", f"{len(cells)} fields, the header has {len(names)}")
            asset = layout.asset or importer.asset_of(
                {layout.asset_column: cells[index[layout.asset_column]]}
            )
            when = importer.times.parse(cells[time_index])
            metric = cells[metric_index].strip()
            if not is_identifier(metric):
                raise InvalidPayload(layout.metric_column, f"{metric[:70]!r} is not a metric name")
            value = _number(cells[value_index], layout.value_column)
        except InvalidPayload as exc:
            importer.reject(line, cells, exc.reason)
            continue
        if current != (asset, when):
            if current is not None:
                _emit(importer, current, metrics, first_line)
            current, metrics, first_line = (asset, when), {}, line
        metrics[metric] = value
    if current is not None:
        _emit(importer, current, metrics, first_line)


def _emit(
    importer: _Importer, key: tuple[str, dt.datetime], metrics: dict[str, float], line: int
) -> None:
    asset, when = key
    importer.add(
        Message(
            importer.topic,
            b"",
            importer.now,
            importer.target(asset),
            Decoded([Reading(when, None, metrics)], [], []),
            source="import",
            line=line,
        ),
        1,
    )
    _seen(importer, asset, when)


def _seen(importer: _Importer, asset: str, when: dt.datetime) -> None:
    importer.result.assets.add(asset)
    last = importer.last_seen.get(asset)
    if last is None or when > last:
        importer.last_seen[asset] = when


def _series_end_events(importer: _Importer) -> None:
    kind = importer.layout.series_end_event
    if not kind:
        return
    for asset, when in sorted(importer.last_seen.items()):
        event = Event(when, kind, "series_end", "", {"source": "series end"})
        importer.add(
            Message(
                importer.topic,
                b"",
                importer.now,
                Topic(importer.target(asset).account_id, asset, "event"),
                Decoded([], [event], []),
                source="import",
            ),
            1,
        )


def import_events(
    database_url: str,
    path: Path,
    layout: CsvLayout,
    limits: Limits,
    progress: Callable[[str], None] | None = None,
) -> ImportResult:
    """Stream an events CSV file (time, asset, kind, component, code, other columns kept as
    the event's detail) into the database."""
    if not layout.asset and not layout.asset_column:
        raise ConfigError("--asset", "name the asset (--asset) or its column (--asset-column)")

    def body(
        importer: _Importer, rows: _Rows, names: list[str], time_column: str, meter: _Progress
    ) -> None:
        if not layout.kind and layout.kind_column not in names:
            raise InputError(
                f"{path}: no column {layout.kind_column!r}; give the event "
                "kind with --kind or its column with --kind-column"
            )
        special = {
            time_column,
            layout.asset_column,
            layout.kind_column,
            layout.component_column,
            layout.code_column,
        } | set(layout.ignore)
        for line, cells in rows:
            importer.result.rows += 1
            meter.tick(importer.result.rows)
            try:
                event, asset = _event_row(importer, names, cells, time_column, special)
            except InvalidPayload as exc:
                importer.reject(line, cells, exc.reason)
                continue
            importer.add(
                Message(
                    importer.topic,
                    b"",
                    importer.now,
                    Topic(importer.target(asset).account_id, asset, "event"),
                    Decoded([], [event], []),
                    source="import",
                    line=line,
                ),
                1,
            )
            importer.result.assets.add(asset)

    return _stream(database_url, path, layout, limits, progress, body)


def _event_row(
    importer: _Importer, names: list[str], cells: list[str], time_column: str, special: set[str]
) -> tuple[Event, str]:
    layout = importer.layout
    if len(cells) != len(names):
        raise InvalidPayload("", f"{len(cells)} fields, the header has {len(names)}")
    row = dict(zip(names, (c.strip() for c in cells), strict=True))
    asset = layout.asset or importer.asset_of(row)
    when = importer.times.parse(row[time_column])
    kind = layout.kind or row.get(layout.kind_column, "")
    if not is_identifier(kind):
        raise InvalidPayload("kind", f"{kind[:70]!r} is not an event kind identifier")
    component = row.get(layout.component_column, "")
    code = row.get(layout.code_column, "")
    for name, value in (("component", component), ("code", code)):
        if value and not is_identifier(value):
            raise InvalidPayload(name, f"{value[:70]!r} is not an identifier")
    detail = {k: v for k, v in row.items() if k not in special and v != ""}
    return Event(when, kind, code, component, detail), asset

"""Benchmark of ``basewatch api`` under its CSMs' load: requests/s, p50 and p99 per route.

Issue 15's benchmark.

Builds a fresh database (``bw_bench_<random>``, plain PostgreSQL, dropped at the end), generated
in SQL:

* ``--csms`` CSMs (default 50) and ``--assets`` compressors (default 10,000) in accounts of 1-5
  machines (3 on average, as ``bench/score.py`` draws them), the accounts dealt
  over the CSMs in turn; four components per machine;
* ``--usage-days`` days of daily usage rollups per machine (default 90: what the account page's
  usage chart reads) and one ``account_health`` row per account and day over the last 30 days
  (the scheduler keeps the last pass of each day);
* alerts at the demo's density, ``--alerts-per-csm-week`` (default 5: ``scripts/demo`` raises
  about that many per CSM and week; after its two months of replay one CSM's page held 38
  active alerts) over the last ``--weeks`` weeks (default 8), spread evenly in time, each on
  its own machine of that CSM's accounts, kinds in turn. Their state follows the demo's
  assumption that a CSM acknowledges an alert the day after it arrives, plus a backlog: those
  of the last 7 days are still ``open``, older ones ``acknowledged``, and half of those older
  than 28 days closed (won, lost or dismissed). With the defaults: 40 alerts per CSM, 30 of
  them active, 5 open;
* one ``csm`` user per CSM (username = CSM id), with a generated password.

Then it starts the real server, ``python -m basewatch api`` on a free port (a subprocess;
``--api-env KEY=VALUE`` passes settings such as ``BASEWATCH_API_THREADS``), waits for
``/readyz``, signs in ``--clients`` different CSMs (default 20) one after the other through
``POST /signin`` (``--auth session``, the browser's way; ``--auth token``: a personal token as
``Authorization: Bearer``) and reports how long a sign-in took: one at a time, before the
measurement, because a burst of them is refused (see below). Then it runs ``--clients`` client
processes, each with one of those sessions. For ``--seconds`` (default 30) every client
requests the routes of :data:`ROUTES` in turn as fast as it gets answers (a closed loop: one
request at a time per client, a new connection per request: the worst case for the server,
which keeps connections alive since the FastAPI port),
with one of its CSM's accounts drawn at random where a route names an account. Latency is
from sending the request to reading the whole body. Only 200s count as answered; anything else
(a 503 when busy, say) is counted as an error per status.

It prints per route the requests, requests/s, p50, p99 and max in ms, the errors, and whether
p99 is under the issue's target of 300 ms (for the CSM's inbox and the account page; the JSON
list has none), then the server's CPU seconds per request and the load average; ``--json``
prints one JSON document instead. Clients, server and PostgreSQL share this machine's cores, so
the figures are those of one box serving everything; it never fails on the target.

Why sign in one at a time: ``POST /signin`` holds one of the API's database connections
(``BASEWATCH_API_DB_POOL_MAX``, default 8) while it checks the Argon2 hash, which is slow by
design (0.3-1.3 s each on this loaded machine). Twenty clients signing in at once kept all
eight busy, and four sign-ins waited past ``BASEWATCH_API_DB_POOL_TIMEOUT_S`` (5 s) and got a
503. The bench retries a 503 after its ``Retry-After`` and counts the retries.

    .venv/bin/python bench/api.py                       # 10,000 assets, 50 CSMs, 20 clients, 30 s
    .venv/bin/python bench/api.py --seconds 10 --clients 5 --json
    .venv/bin/python bench/api.py --api-env BASEWATCH_API_THREADS=32 \\
        --api-env BASEWATCH_API_DB_POOL_MAX=16

A new page is one more line in :data:`ROUTES`; its path may name ``{csm_id}`` and
``{account_id}``. ``--route NAME=PATH`` (repeatable; ``--route-target NAME`` holds it to the
target) adds one for a run, e.g. against a server built from a branch that has the page.
The issue's targets (p99 under 300 ms) are the CSM's inbox and the account page; My accounts
and the JSON health are measured beside them.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import multiprocessing
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, LiteralString

import psycopg
from psycopg.rows import TupleRow

from basewatch.users import create_token, create_user
from basewatch.wiring import PACKAGES
from core.db import drop_database, ensure_database, with_database
from core.migrate import migrate

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
TARGET_P99_MS = 300.0  # issue 15: a CSM's inbox and account page on this machine


@dataclass(frozen=True)
class Route:
    name: str
    path: str  # may name {csm_id} and {account_id}
    target_p99_ms: float | None  # None: no target in the issue


ROUTES = (
    Route("inbox", "/csm/{csm_id}", TARGET_P99_MS),
    Route("alerts_open", "/alerts?status=open", None),
    Route("account_page", "/accounts/{account_id}", TARGET_P99_MS),
    Route("my_accounts", "/csm/{csm_id}/accounts", None),
    Route("account_health", "/accounts/{account_id}/health", None),
)

KINDS = (  # kind, family: the alert kinds the demo raises
    ("capacity_saturation", "expansion"),
    ("usage_decline", "risk"),
    ("service_due", "service"),
    ("heat_recovery", "expansion"),
    ("silent_assets", "risk"),
    ("failure_risk", "service"),
    ("efficiency_upgrade", "expansion"),
    ("third_party_parts", "risk"),
    ("usage_growth", "expansion"),
    ("renewal_risk", "risk"),
)
PASSWORD_PREFIX = "bench-"
Conn = psycopg.Connection[TupleRow]

# The registry: accounts of 1-5 assets (bench/score.py's draw), dealt over the CSMs in turn.
_REGISTRY = [
    (
        "CSMs",
        "INSERT INTO csms (csm_id, name, email) SELECT 'csm-' || i, 'CSM ' || i,"
        " 'csm' || i || '@example.com' FROM generate_series(1, %(csms)s) i",
    ),
    (
        "the plan (accounts of 1-5 machines)",
        """
    CREATE UNLOGGED TABLE bench_plan AS
    WITH sizes AS (
        SELECT k, 1 + (k * 7 + k / 3) %% 5 AS size FROM generate_series(1, %(assets)s) k
    ), accounts AS (
        SELECT k, size, sum(size) OVER (ORDER BY k) - size AS first FROM sizes
    )
    SELECT 'b-' || lpad(k::text, 5, '0') || '-c' || n AS asset_id,
           'b-' || lpad(k::text, 5, '0') AS account_id, k, n,
           'csm-' || (1 + k %% %(csms)s) AS csm_id
    FROM accounts, generate_series(1, size) n
    WHERE first + n <= %(assets)s
    """,
    ),
    (
        "accounts",
        """
    INSERT INTO accounts (account_id, name, industry, region, csm_id)
    SELECT DISTINCT account_id, 'Bench account ' || k,
           (ARRAY['food', 'auto', 'pharma', 'metal', 'chemicals'])[1 + k %% 5],
           (ARRAY['north', 'south', 'east', 'west'])[1 + (k / 5) %% 4], csm_id
    FROM bench_plan
    """,
    ),
    (
        "assets",
        """
    INSERT INTO assets (asset_id, account_id, serial, model, rated_power_kw, rated_flow_m3_min,
                        installed_on)
    SELECT asset_id, account_id, 'SN' || k || n, 'GA75 VSD', 75, 16.5, DATE '2019-06-01'
    FROM bench_plan
    """,
    ),
    (
        "components",
        """
    INSERT INTO components (asset_id, kind, rated_life_hours, installed_at_running_hours)
    SELECT asset_id, kind, life, round((random() * 20000)::numeric, 1)
    FROM bench_plan,
         (VALUES ('air_filter', 4000), ('oil_filter', 4000), ('separator', 8000),
                 ('oil', 8000)) AS c(kind, life)
    """,
    ),
    (
        "account health (one pass a day kept, as the scheduler leaves it)",
        """
    INSERT INTO account_health (account_id, as_of, probability, horizon_days, method, factors)
    SELECT account_id, date_trunc('day', now()) - make_interval(days => d) + INTERVAL '6 hours',
           round(random()::numeric, 4), 90, 'weighted',
           jsonb_build_object('top', jsonb_build_array(
               jsonb_build_object('feature', 'usage_trend', 'contribution', 0.2,
                                  'value', -0.1, 'text', 'usage 10%% below its baseline')))
    FROM (SELECT DISTINCT account_id FROM bench_plan) a, generate_series(0, 29) d
    WHERE date_trunc('day', now()) - make_interval(days => d) + INTERVAL '6 hours' <= now()
    """,
    ),
]
# Daily usage rollups: [mean, min, max, last, readings] per metric, as signals.rollups keeps days.
_USAGE = """
INSERT INTO rollup_daily (asset_id, bucket, samples, stats)
SELECT asset_id, date_trunc('day', now()) - make_interval(days => d), 24,
       jsonb_build_object(
           'flow_m3_min', jsonb_build_array(f, f * 0.1, f * 1.6, f, 24),
           'load_pct', jsonb_build_array(f * 5, 0, 100, f * 5, 24),
           'power_kw', jsonb_build_array(f * 3.5, 4, 75, f * 3.5, 24),
           'running_hours', jsonb_build_array(h - 5, h - 10, h, h, 24))
FROM bench_plan, generate_series(1, %(days)s) d,
     LATERAL (SELECT round((8 + random() * 6)::numeric, 3) AS f,
                     20000 + (%(days)s - d) * 10 + k AS h) v
"""
# Alert j (0-based) of a CSM: on the CSM's machine number j + 1, opened j x spacing ago.
_ALERTS = """
WITH kinds (i, kind, family) AS (SELECT * FROM jsonb_to_recordset(%(kinds)s::jsonb)
                                 AS k(i int, kind text, family text)),
mine AS (
    SELECT asset_id, account_id, csm_id,
           row_number() OVER (PARTITION BY csm_id ORDER BY k, n) - 1 AS j
    FROM bench_plan
), picked AS (
    SELECT m.*, now() - make_interval(secs => (m.j + random()) * %(spacing_s)s) AS opened_at,
           0.3 + random() * 0.65 AS score, round((100 + random() * 4900)::numeric, 2) AS value
    FROM mine m WHERE m.j < %(per_csm)s
)
INSERT INTO alerts (account_id, kind, family, subject, status, score, value, expected_value,
                    priority, horizon_days, reasons, figures, owner_csm_id, opened_at,
                    updated_at, last_seen_at, due_at, acknowledged_at, acknowledged_by,
                    closed_at, closed_by, delivery)
SELECT p.account_id, kinds.kind, kinds.family, p.asset_id, s.status, p.score, p.value,
       round(p.value * p.score::numeric, 2), 5 - least(4, floor(p.score * 5)::int), 30,
       jsonb_build_array('load above 95%% in 61%% of hours',
                         'pressure below set point 7%% of the time'),
       '{"load_high_share": 0.61}', p.csm_id, p.opened_at, p.opened_at, p.opened_at,
       p.opened_at + INTERVAL '30 days',
       CASE WHEN s.status <> 'open' THEN p.opened_at + INTERVAL '1 day' END,
       CASE WHEN s.status <> 'open' THEN p.csm_id END,
       CASE WHEN s.status IN ('won', 'lost', 'dismissed')
            THEN p.opened_at + INTERVAL '10 days' END,
       CASE WHEN s.status IN ('won', 'lost', 'dismissed') THEN p.csm_id END,
       CASE WHEN p.j %% 3 = 0 THEN 'immediate' ELSE 'digest' END
FROM picked p
JOIN kinds ON kinds.i = p.j %% %(kind_count)s
CROSS JOIN LATERAL (
    SELECT CASE WHEN p.opened_at > now() - INTERVAL '7 days' THEN 'open'
                WHEN p.opened_at < now() - INTERVAL '28 days' AND p.j %% 2 = 0
                THEN (ARRAY['won', 'lost', 'dismissed'])[1 + (p.j / 2) %% 3]
                ELSE 'acknowledged' END AS status
) s
"""
_HISTORY = """
INSERT INTO alert_history (alert_id, at, action, actor)
SELECT alert_id, opened_at, 'opened', 'system' FROM alerts
UNION ALL
SELECT alert_id, acknowledged_at, 'acknowledged', acknowledged_by FROM alerts
WHERE acknowledged_at IS NOT NULL
UNION ALL
SELECT alert_id, closed_at, status, closed_by FROM alerts WHERE closed_at IS NOT NULL
"""


def _progress(message: str) -> None:
    print(f"bench/api: {message}", file=sys.stderr, flush=True)


def _count(conn: Conn, query: LiteralString) -> int:
    row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def _step(
    conn: Conn, label: str, query: LiteralString, params: dict[str, Any] | None = None
) -> None:
    """Run one set-based statement of the generation and say what it made and how fast."""
    started = time.monotonic()
    cursor = conn.execute(query, params)
    rows = f"{cursor.rowcount:,} rows, " if cursor.rowcount > 0 else ""
    _progress(f"  {label}: {rows}{time.monotonic() - started:.1f} s")


def generate(conn: Conn, args: argparse.Namespace) -> dict[str, Any]:
    """The registry, usage, health and alerts; returns what was made and how long it took.
    Everything is generated by set-based statements inside PostgreSQL (no rows travel from
    Python), which is faster than COPY from the client would be."""
    started = time.monotonic()
    conn.execute("SELECT setseed(0.15)")  # random() below draws the same data every run
    for label, statement in _REGISTRY:
        _step(conn, label, statement, {"csms": args.csms, "assets": args.assets})
    if args.usage_days:
        _step(conn, "daily usage rollups", _USAGE, {"days": args.usage_days})
    per_csm = round(args.alerts_per_csm_week * args.weeks)
    spacing_s = args.weeks * 7 * 86_400 / max(per_csm, 1)
    kinds = [{"i": i, "kind": k, "family": f} for i, (k, f) in enumerate(KINDS)]
    _step(
        conn,
        "alerts",
        _ALERTS,
        {
            "kinds": json.dumps(kinds),
            "kind_count": len(KINDS),
            "per_csm": per_csm,
            "spacing_s": spacing_s,
        },
    )
    _step(conn, "alert history", _HISTORY)
    conn.execute("DROP TABLE bench_plan")
    _step(conn, "VACUUM ANALYZE", "VACUUM ANALYZE")
    statuses: dict[str, int] = dict(
        conn.execute("SELECT status, count(*) FROM alerts GROUP BY status ORDER BY 1").fetchall()
    )
    active = statuses.get("open", 0) + statuses.get("acknowledged", 0)
    return {
        "assets": _count(conn, "SELECT count(*) FROM assets"),
        "accounts": _count(conn, "SELECT count(*) FROM accounts"),
        "csms": _count(conn, "SELECT count(*) FROM csms"),
        "usage_rollup_days": _count(conn, "SELECT count(*) FROM rollup_daily"),
        "alerts": sum(statuses.values()),
        "alerts_by_status": statuses,
        "active_alerts_per_csm": round(active / max(args.csms, 1), 1),
        "seconds": round(time.monotonic() - started, 1),
    }


def create_users(conn: Conn, csm_ids: list[str], auth: str) -> dict[str, str]:
    """A csm user per CSM id; returns the password (``session``) or a personal token
    (``token``) of each."""
    secrets_of: dict[str, str] = {}
    for csm_id in csm_ids:
        password = PASSWORD_PREFIX + secrets.token_urlsafe(12)
        create_user(conn, csm_id, "csm", password, csm_id=csm_id)
        secrets_of[csm_id] = (
            password if auth == "session" else create_token(conn, csm_id, "bench")[1]
        )
    return secrets_of


# -- the server ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_api(url: str, port: int, extra_env: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BASEWATCH_DATABASE_URL": url}
    for item in extra_env:
        key, _, value = item.partition("=")
        env[key] = value
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "basewatch", "api", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"basewatch api exited with {process.returncode}: see {log}")
        try:
            if request(port, "GET", "/readyz", {})[0] == 200:
                return process
        except OSError:
            pass
        time.sleep(0.2)
    process.terminate()
    raise SystemExit(f"basewatch api was not ready within 60 s: see {log}")


def stop_api(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the clients ---------------------------------------------------------------------------------


def request(
    port: int, method: str, path: str, headers: dict[str, str], body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    """The status, the headers (names in lower case: uvicorn sends them so), the body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


SIGN_IN_ATTEMPTS = 5


def sign_in(port: int, username: str, secret: str, auth: str) -> tuple[dict[str, str], int]:
    """The headers that authenticate ``username``'s requests, and how many 503s (too busy)
    were retried on the way."""
    if auth == "token":
        return {"Authorization": f"Bearer {secret}"}, 0
    form = urllib.parse.urlencode({"username": username, "password": secret}).encode()
    for busy in range(SIGN_IN_ATTEMPTS):
        status, headers, _ = request(
            port,
            "POST",
            "/signin",
            {"Content-Type": "application/x-www-form-urlencoded"},
            form,
        )
        cookie = headers.get("set-cookie", "")
        if status == 303 and cookie:
            return {"Cookie": cookie.split(";", 1)[0]}, busy
        if status != 503:
            break
        time.sleep(min(float(headers.get("retry-after", "1")), 5.0))
    raise SystemExit(f"sign-in of {username} failed: {status}")


def sign_in_all(
    port: int, secrets_of: dict[str, str], auth: str
) -> tuple[dict[str, dict[str, str]], dict[str, Any]]:
    """Each CSM's headers, signed in one after the other; and the sign-ins' figures."""
    headers_of: dict[str, dict[str, str]] = {}
    took_ms: list[float] = []
    retried = 0
    for csm_id, secret in secrets_of.items():
        started = time.perf_counter()
        headers_of[csm_id], busy = sign_in(port, csm_id, secret, auth)
        took_ms.append((time.perf_counter() - started) * 1000)
        retried += busy
    p50 = percentile(took_ms, 0.5)
    return headers_of, {
        "count": len(took_ms),
        "p50_ms": None if p50 is None else round(p50, 1),
        "max_ms": round(max(took_ms), 1) if took_ms else None,
        "retried_503": retried,
    }


@dataclass(frozen=True)
class Client:
    port: int
    csm_id: str
    headers: dict[str, str]  # what authenticates the CSM (a session cookie or a token)
    accounts: tuple[str, ...]
    routes: tuple[Route, ...]
    start_at: float  # time.time() when the measurement starts
    seconds: float
    seed: int


def run_client(client: Client) -> dict[str, Any]:
    """One signed-in CSM requesting every route in turn until the time is up: per route the
    latencies (ms) of the 200s and the other statuses."""
    headers = client.headers
    rng = random.Random(client.seed)
    routes = client.routes
    latencies: dict[str, list[float]] = {r.name: [] for r in routes}
    errors: dict[str, Counter[str]] = {r.name: Counter() for r in routes}
    time.sleep(max(0.0, client.start_at - time.time()))
    end = client.start_at + client.seconds
    turn = rng.randrange(len(routes))  # the clients do not march in step
    while time.time() < end:
        route = routes[turn % len(routes)]
        turn += 1
        path = route.path.format(
            csm_id=urllib.parse.quote(client.csm_id, safe=""),
            account_id=urllib.parse.quote(rng.choice(client.accounts), safe=""),
        )
        started = time.perf_counter()
        try:
            status = request(client.port, "GET", path, headers)[0]
        except OSError as exc:
            errors[route.name][type(exc).__name__] += 1
            continue
        elapsed_ms = (time.perf_counter() - started) * 1000
        if status == 200:
            latencies[route.name].append(elapsed_ms)
        else:
            errors[route.name][str(status)] += 1
    return {"latencies": latencies, "errors": {k: dict(v) for k, v in errors.items()}}


def percentile(values: list[float], share: float) -> float | None:
    """The nearest-rank percentile (``share`` in 0..1) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, round(share * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def summarise(
    routes: tuple[Route, ...], results: list[dict[str, Any]], seconds: float
) -> list[dict[str, Any]]:
    rows = []
    for route in routes:
        latencies = [ms for r in results for ms in r["latencies"][route.name]]
        errors: Counter[str] = Counter()
        for r in results:
            errors.update(r["errors"][route.name])
        p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
        rows.append(
            {
                "route": route.name,
                "path": route.path,
                "requests": len(latencies),
                "requests_per_s": round(len(latencies) / seconds, 1),
                "p50_ms": None if p50 is None else round(p50, 1),
                "p99_ms": None if p99 is None else round(p99, 1),
                "max_ms": round(max(latencies), 1) if latencies else None,
                "errors": dict(errors),
                "target_p99_ms": route.target_p99_ms,
                "meets_target": (  # None: no target; no answer at all misses it
                    None
                    if route.target_p99_ms is None
                    else p99 is not None and p99 < route.target_p99_ms and not errors
                ),
            }
        )
    return rows


# -- the run -------------------------------------------------------------------------------------


def accounts_of(conn: Conn, csm_ids: list[str]) -> dict[str, tuple[str, ...]]:
    rows = conn.execute(
        "SELECT csm_id, array_agg(account_id ORDER BY account_id) FROM accounts"
        " WHERE csm_id = ANY(%s) GROUP BY csm_id",
        (csm_ids,),
    ).fetchall()
    return {csm_id: tuple(accounts) for csm_id, accounts in rows}


def routes_of(args: argparse.Namespace) -> tuple[Route, ...]:
    """:data:`ROUTES` plus those of ``--route NAME=PATH`` (no target unless
    ``--route-target``)."""
    extra = []
    for item in args.route:
        name, _, path = item.partition("=")
        if not name or not path.startswith("/"):
            raise SystemExit(f"--route wants NAME=/path, got {item!r}")
        extra.append(Route(name, path, TARGET_P99_MS if name in args.route_target else None))
    return (*ROUTES, *extra)


def run(args: argparse.Namespace) -> dict[str, Any]:
    routes = routes_of(args)
    url = with_database(args.database_url, f"bw_bench_{os.urandom(4).hex()}")
    ensure_database(url)
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-api-{os.getpid()}.log"
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn, PACKAGES, "off")
            _progress(
                f"generating {args.assets:,} assets, {args.csms} CSMs, "
                f"{args.alerts_per_csm_week} alerts per CSM and week over {args.weeks} weeks ..."
            )
            data = generate(conn, args)
            _progress(f"generated in {data['seconds']} s; creating {args.clients} users ...")
            csm_ids = [f"csm-{1 + i % args.csms}" for i in range(min(args.clients, args.csms))]
            secrets_of = create_users(conn, csm_ids, args.auth)
            accounts = accounts_of(conn, csm_ids)
        port = free_port()
        api = start_api(url, port, args.api_env, log)
        try:
            _progress(f"signing in {len(secrets_of)} CSMs ({args.auth}) ...")
            headers_of, signing_in = sign_in_all(port, secrets_of, args.auth)
            start_at = time.time() + 2 + 0.1 * args.clients  # every client forked by then
            clients = [
                Client(
                    port,
                    csm_ids[i % len(csm_ids)],
                    headers_of[csm_ids[i % len(csm_ids)]],
                    accounts[csm_ids[i % len(csm_ids)]],
                    routes,
                    start_at,
                    args.seconds,
                    seed=i,
                )
                for i in range(args.clients)
            ]
            _progress(f"{args.clients} clients for {args.seconds} s against port {port} ...")
            context = multiprocessing.get_context("fork")
            with concurrent.futures.ProcessPoolExecutor(
                max_workers=args.clients, mp_context=context
            ) as pool:
                futures = [pool.submit(run_client, c) for c in clients]
                time.sleep(max(0.0, start_at - time.time()))
                cpu_before, load_before = cpu_seconds(api.pid), os.getloadavg()[0]
                results = [f.result() for f in futures]
                cpu_after, load_after = cpu_seconds(api.pid), os.getloadavg()[0]
        finally:
            stop_api(api)
    finally:
        drop_database(url)
    rows = summarise(routes, results, args.seconds)
    answered = sum(r["requests"] for r in rows)
    return {
        "parameters": {
            "assets": args.assets,
            "csms": args.csms,
            "clients": args.clients,
            "seconds": args.seconds,
            "auth": args.auth,
            "alerts_per_csm_week": args.alerts_per_csm_week,
            "weeks": args.weeks,
            "usage_days": args.usage_days,
            "api_env": args.api_env,
        },
        "data": data,
        "sign_in": signing_in,
        "routes": rows,
        "requests_per_s": round(answered / args.seconds, 1),
        "server_cpu_s": round(cpu_after - cpu_before, 2),
        "server_cpu_ms_per_request": (
            round((cpu_after - cpu_before) * 1000 / answered, 2) if answered else None
        ),
        "load_average_1min": {"before": round(load_before, 2), "after": round(load_after, 2)},
        "cpus": os.cpu_count(),
        "target_p99_ms": TARGET_P99_MS,
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _text(d: dict[str, Any]) -> str:
    p, data = d["parameters"], d["data"]
    lines = [
        f"basewatch api: {data['assets']:,} assets in {data['accounts']:,} accounts, "
        f"{data['csms']} CSMs, {data['alerts']:,} alerts "
        f"({', '.join(f'{k} {v:,}' for k, v in data['alerts_by_status'].items())}; "
        f"{data['active_alerts_per_csm']} active per CSM), "
        f"{data['usage_rollup_days']:,} daily usage rollups",
        f"{p['clients']} clients ({p['auth']}) for {p['seconds']} s on {d['cpus']} CPUs "
        "shared by clients, server and PostgreSQL",
        "",
        f"{'route':<12} {'path':<32} {'requests':>8} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'max ms':>8}  {'errors':<12} p99 < {d['target_p99_ms']:.0f} ms",
    ]
    for r in d["routes"]:
        verdict = {None: "(no target)", True: "yes", False: "NO"}[r["meets_target"]]
        errors = ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "0"
        lines.append(
            f"{r['route']:<12} {r['path']:<32} {r['requests']:>8,} {r['requests_per_s']:>7.1f}"
            f" {_ms(r['p50_ms']):>8} {_ms(r['p99_ms']):>8} {_ms(r['max_ms']):>8}  {errors:<12}"
            f" {verdict}"
        )
    lines += [
        "",
        f"all routes: {d['requests_per_s']:.1f} requests/s; server CPU {d['server_cpu_s']} s"
        f" ({_ms(d['server_cpu_ms_per_request'])} ms per request); load average (1 min)"
        f" {d['load_average_1min']['before']:.2f} before, {d['load_average_1min']['after']:.2f}"
        " after",
        f"sign-in ({p['auth']}, one at a time before the measurement): {d['sign_in']['count']},"
        f" p50 {_ms(d['sign_in']['p50_ms'])} ms, max {_ms(d['sign_in']['max_ms'])} ms,"
        f" {d['sign_in']['retried_503']} retried after a 503",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=10_000)
    parser.add_argument("--csms", type=int, default=50)
    parser.add_argument(
        "--clients",
        type=int,
        default=20,
        help="concurrent clients, each a different CSM (at most --csms)",
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="measured time")
    parser.add_argument(
        "--alerts-per-csm-week",
        type=float,
        default=5.0,
        help="alerts raised per CSM and week (the demo's density: about 5)",
    )
    parser.add_argument("--weeks", type=int, default=8, help="weeks of alert history")
    parser.add_argument(
        "--usage-days", type=int, default=90, help="days of daily usage rollups per machine"
    )
    parser.add_argument(
        "--auth",
        choices=("session", "token"),
        default="session",
        help="session: sign in through /signin and send the cookie (default); token: a"
        " personal API token as a bearer",
    )
    parser.add_argument(
        "--api-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting for the server (repeatable), e.g. BASEWATCH_API_THREADS=32",
    )
    parser.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="one more route to request (repeatable), its path naming {csm_id} and"
        " {account_id} as in ROUTES, e.g. account_page=/accounts/{account_id}",
    )
    parser.add_argument(
        "--route-target",
        action="append",
        default=[],
        metavar="NAME",
        help="a --route NAME held to the p99 target (repeatable)",
    )
    parser.add_argument(
        "--database-url",
        default=DEFAULT_SERVER,
        help="a connection string to the server to use (its database name is replaced)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    if args.clients > args.csms:
        parser.error("--clients must be at most --csms: each client is a different CSM")
    document = run(args)
    print(json.dumps(document, indent=2) if args.json else _text(document))


if __name__ == "__main__":
    main()

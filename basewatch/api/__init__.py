"""``basewatch api``: the HTTP API and the CSM pages, FastAPI on uvicorn.

Endpoints (JSON documents carry the field names of the CLI's ``--json`` output, built by the
same functions: ``signals.alerts``, ``signals.health``, ``nrr.headline``; their schemas are
published at ``/openapi.json``)::

    GET  /healthz                          200 {"status": "ok"} or 503 {"status": "unavailable"}
    GET  /livez                            200 {"status": "ok"} while the process serves (no
                                           database involved)
    GET  /readyz                           200 {"status": "ready"}, or 503 {"status": "unavailable",
                                           "reason": ...}: database unreachable, migrations pending
    GET  /metrics                          Prometheus text format (``basewatch.metrics``)
    GET  /openapi.json                     the OpenAPI 3.1 schema of the JSON routes (public)
    GET  /alerts?status=&owner=&kind=&account=&family=&limit=&offset=   like `alerts list --json`
    GET  /alerts/<id>                      the alert with its "history"
    POST /alerts/<id>/ack                  {"by"?}
    POST /alerts/<id>/snooze               {"by"?, "until": ISO time | "hours": N, "reason"}
    POST /alerts/<id>/resolve              {"by"?, "outcome": won|lost|dismissed, "note"?}
    POST /alerts/<id>/feedback             {"by"?, "useful": true|false}
    GET  /accounts/<id>/health             the account's row of `signals health --json`
    GET  /nrr?month=YYYY-MM                `nrr show --json` (manager, admin)
    GET  /signin, POST /signin             HTML: the sign-in form; 303 with the session cookie
    POST /signout                          ends the session server-side, 303 to /signin
    GET  /                                 HTML: the CSMs and their active alert counts
    GET  /csm/<csm_id>?family=&kind=&account=&status=&offset=   HTML: that CSM's alerts (500 a
                                           page), new first,
                                           then by expected value; overdue due dates marked
    POST /csm/<csm_id>/alerts/<id>/{ack,snooze,resolve,feedback}   HTML forms, then 303 back
    GET  /csm/<csm_id>/accounts?sort=&q=&offset=   HTML: that CSM's accounts (health, MRR
                                           and its trend, renewal, active alerts by family,
                                           last data)
    GET  /accounts?sort=&q=&offset=        HTML: every account (manager, admin; a csm is sent
                                           to their own list)
    GET  /accounts/<account_id>            HTML: the account: contracts, MRR and usage charts,
                                           machines and component life, alerts, health factors
    GET  /accounts/<account_id>/review?from=&to=   HTML: the printable business review of
                                           the account (``basewatch.pages.review``)
    GET  /team?days=30|90|365              HTML: alerts per CSM, the share acted on, the value
                                           won (manager, admin)
    GET  /reports/nrr?month=YYYY-MM        HTML: the monthly NRR report, as `nrr report` writes
                                           it (manager, admin)
    POST /csm/<csm_id>/alerts/bulk         HTML form: acknowledge or resolve the ticked alerts
                                           (an audit row each), then 303 back

Every GET route answers HEAD too (the same status and headers, no body).

The package, smallest concern first: ``config`` (:class:`ApiConfig` from the settings, the
bounds that are not settings), ``context`` (``Api``: the pool, the metrics), ``errors``
(exceptions to answers), ``auth`` (the ``Gate`` dependency: principal, session, token, CSRF,
same-origin), ``models`` (pydantic models of every JSON document), ``routes`` (JSON),
``pages`` (HTML: the page functions of ``basewatch.pages``, Jinja2 templates in
``basewatch/templates``, autoescape on), ``app`` (the FastAPI factory and the ``Edge``
middleware), ``server`` (uvicorn, the connection bounds, signals). What the pages and the JSON
routes share (request, response, principal, the alert-change path) is in ``basewatch.web``.

Decisions:

- FastAPI on uvicorn (issue 15 item 1) in place of the hand-made ``http.server`` server:
  HTTP/1.1 with keep-alive (an idle connection is closed after ``KEEP_ALIVE_S``), one event
  loop that holds connections, and sync route functions run in a thread pool. The process
  runs one uvicorn server; scale out with more processes behind the proxy.
- Bounded everywhere (issue 11 item 6), see ``basewatch.api.server``: at most
  ``BASEWATCH_API_MAX_CONNECTIONS`` connections held (uvicorn's ``limit_concurrency``, with
  our 503 + ``Retry-After`` problem answer), at most ``BASEWATCH_API_THREADS`` requests
  running at once (the thread pool of the sync routes, sized in the app's lifespan; the
  others wait for a thread inside the connection bound), the listen backlog
  ``LISTEN_BACKLOG``. Database connections come from one ``psycopg_pool`` pool of at most
  ``BASEWATCH_API_DB_POOL_MAX`` (at least one kept open, each checked with an empty query when
  handed out, so a database restart costs no request); a request that waits longer than
  ``BASEWATCH_API_DB_POOL_TIMEOUT_S`` for one is a 503 with ``Retry-After``. So however many
  clients come, the API holds at most that many PostgreSQL sessions, and the ingesters and
  the scheduler keep theirs.
- A client must send its whole request within ``request_timeout_s`` (``REQUEST_TIMEOUT_S``)
  of its connection or of its previous answer, else the connection is closed; a request
  body over ``MAX_BODY_BYTES`` is a 413. Slow clients hold connections (within the bound),
  never worker threads: the body is read before the route runs.
- SIGTERM/SIGINT: stop accepting and close the listening socket, let the running requests
  finish, close the pool, exit 0.
- The process starts without a database: the pool keeps connecting in the background (an
  attempt given up after ``RECONNECT_TIMEOUT_S``, the next request starts a new one) and
  requests answer 503 until it is reachable; ``/livez`` never touches the database,
  ``/readyz`` checks it and the migrations. Each connection has a statement timeout of
  ``STATEMENT_TIMEOUT_S``; a request's transaction is committed when it succeeds and rolled
  back otherwise.
- Errors are RFC 9457 problem details (``application/problem+json``: ``type``
  ``about:blank``, ``title``, ``status``, ``detail``) that keep the ``"error"`` field of
  earlier versions (same text as ``detail``), so existing clients keep working; an HTML page
  on the CSM pages. 400 bad input (a malformed request, a query parameter of the wrong type
  or out of range included: not FastAPI's 422), 401 not signed in or a wrong or revoked
  token, 403 a cross-site change, a missing or wrong CSRF token, a ``by`` naming someone
  else, the NRR for a csm, 404 unknown route, alert, account, CSM or month (and another
  csm's: no leak), 405 wrong method (with ``Allow``), 409 a lifecycle change the alert's
  status forbids, 413 a body too large, 415 a body of the wrong content type, 503 (always
  with ``Retry-After``) too busy, database unreachable, not migrated or too slow, 500 a bug
  (logged with its traceback, never shown). Database errors are logged; the answer does not
  name the database's host or name, and ``/healthz`` (public) says only ``ok`` or
  ``unavailable``.
- JSON endpoints take ``Content-Type: application/json`` only (a ``text/plain`` or form body
  is a 415: those are the content types a cross-site page can send without a CORS
  preflight). Bodies are strict JSON (no NaN), nested at most as deep as the parser allows
  (deeper is a 400, not a crash), parsed by the routes themselves (``basewatch.web``) and
  documented in the schema by the ``*Body`` models; unknown fields and query parameters are
  rejected, so a typo is a 400 rather than a silently ignored option. A snooze ``until`` is
  bounded like ``hours``: at most ``MAX_SNOOZE_HOURS`` ahead.
- Lists take ``limit`` (1 to ``MAX_LIST_LIMIT``, default 100) and ``offset`` and answer a
  JSON array, as before (no envelope, so existing clients keep working). The HTML lists page
  too: My alerts 500 and the account lists 200 rows a page, through ``?offset=``; the account
  lists filter by ``?q=`` (part of the id or name).
- CSRF (issue 11 item 7): every POST/PUT/PATCH/DELETE is refused with 403 when the browser
  says it comes from another site: ``Sec-Fetch-Site`` other than ``same-origin`` or ``none``,
  or (without that header) an ``Origin`` whose host and port differ from the ``Host`` header
  (``Origin: null`` included; a ``Host`` without a port matches an origin on the scheme's
  default port, so a TLS proxy that keeps ``Host`` works). A request without either header
  (curl, scripts) passes: it cannot come from a browser on another site. The forms take
  ``application/x-www-form-urlencoded`` only.
- Authentication (issue 15; ``basewatch.users``, ``basewatch.auth``): every route but the
  probes, ``/metrics``, ``/openapi.json`` and ``/signin`` needs a principal:
  ``Authorization: Bearer <personal token>`` (``basewatch users token create``; acts with its
  owner's current role) or the session cookie of ``/signin`` (pages, and JSON from a
  signed-in browser). A bearer token that is wrong or revoked is a 401 even beside a valid
  cookie. A signed-out page GET is sent to ``/signin`` (303); everything else is a 401.
- Roles: admin and manager see every alert, account and CSM page and the NRR; a csm sees
  the alerts whose owner is their CSM, the accounts whose ``csm_id`` is theirs and their own
  page (``/`` sends them there); anything else reads as unknown (404, the same message as a
  missing one); ``/nrr`` is a 403 for a csm.
- The actor of every alert change is the authenticated user; a body's ``by`` may be left out
  or repeat the username, anything else is a 403. Each change writes its ``audit_log`` row in
  the change's transaction (source ``api`` or ``page``; ``via`` session, token or service).
- ``BASEWATCH_API_TOKEN`` (deprecated, kept so existing scripts keep working): a shared
  bearer token compared in constant time that acts with the admin's view but is nobody; its
  changes need ``by`` (recorded as the actor, and audited with ``via: service``), and it
  cannot act on the pages. Every request with it writes a ``service_token.use`` audit row
  (target: method and path) and the first one a warning in the log. Prefer personal tokens;
  unset it once scripts have moved.
- CSRF for the session: every state-changing request authenticated by the cookie carries the
  session's CSRF token (form field ``csrf_token``, in every form the pages render, or header
  ``X-CSRF-Token``), else 403; bearer requests need none (a browser cannot send that header
  cross-site). The cookie is ``HttpOnly; SameSite=Lax`` and ``Secure`` when
  ``BASEWATCH_API_PUBLIC_URL`` is https. Sign-in has no session yet: the same-origin check
  above and SameSite cover it.
- Operations: ``/livez``, ``/readyz``, ``/healthz``, ``/metrics`` and ``/openapi.json`` are
  public. The probes (an orchestrator's carry no credentials) say only ready or not, and why
  in a few words without a host or a name. ``/metrics`` holds request counts and durations
  labelled by route pattern (``/alerts/{id}``, never the path: no ids, no account data), like
  the ingester's and the scheduler's metrics ports, which take no credentials either; it
  needs no database, so it still answers while the database (which every sign-in and token
  check reads) is down. The schema names routes and fields, no data. Keep the API's port
  behind the proxy that publishes the pages if request counts are not for everyone. The
  interactive docs (``/docs``, ``/redoc``) are off: they load scripts from a CDN.
- Every answer carries ``X-Frame-Options: DENY`` and a ``Content-Security-Policy`` with
  ``frame-ancestors 'none'`` (no clickjacking of the forms), ``nosniff``, ``no-store``, and
  ``Server: basewatch`` (not uvicorn's).
- On a CSM page the actor is the signed-in user, and only that CSM's alerts can be changed
  there. Snooze from a page is for a chosen 1, 3, 7, 14 or 30 days and asks for a reason (the
  lifecycle keeps one with every snooze).
"""

from basewatch.api.config import APPLICATION_NAME, ApiConfig
from basewatch.api.server import make_server, run_api

__all__ = ["APPLICATION_NAME", "ApiConfig", "make_server", "run_api"]

"""The HTML pages of ``basewatch api`` (issue 15 item 3), rendered with Jinja2 templates from
``basewatch/templates`` (autoescaped): ``signin`` (sign-in, sign-out), ``alerts`` (the CSMs,
a CSM's alerts and the forms acting on them), ``accounts`` (account lists and the account
page). ``basewatch.api.pages`` routes them through FastAPI (``basewatch.api`` holds the server
and the JSON routes); both share ``basewatch.web``."""

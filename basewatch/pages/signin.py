"""Sign-in and sign-out pages: the form, the session cookie, the session's end."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from basewatch.pages.render import quoted, render
from basewatch.web import HttpError, Request, Response, html_response, principal_of, redirect

if TYPE_CHECKING:
    from basewatch.api.context import Api


def page_signin(api: Api, request: Request) -> Response:
    request.single(())
    return html_response(render("signin.html", message=""))


def post_signin(api: Api, request: Request) -> Response:
    """Check the password, start a session, set the cookie; 401 (wrong username or
    password) or 429 (locked) with the sign-in form again."""
    from basewatch.auth import SignInRefused, session_cookie, sign_in

    request.single(())
    fields = request.form()
    refused = None
    try:  # no connection is held while the password is checked (basewatch.auth.sign_in)
        signed = sign_in(
            api.database,
            fields.get("username", ""),
            fields.get("password", ""),
            now=dt.datetime.now(dt.UTC),
        )
    except SignInRefused as exc:
        refused = exc  # the failure count was committed with its connection
    if refused is not None:
        headers: tuple[tuple[str, str], ...] = ()
        status = 401
        if refused.locked_until is not None:
            status = 429
            wait = refused.locked_until - dt.datetime.now(dt.UTC)
            headers = (("Retry-After", str(max(1, int(wait.total_seconds())))),)
        page = html_response(render("signin.html", message=refused.message), status)
        return Response(page.status, page.content_type, page.body, headers)
    user = signed.user
    target = "/csm/" + quoted(user.csm_id) if user.role == "csm" and user.csm_id else "/"
    cookie = session_cookie(signed.session_id, secure=api.config.secure_cookie)
    answer = redirect(target)
    return Response(
        answer.status, answer.content_type, answer.body, (*answer.headers, ("Set-Cookie", cookie))
    )


def post_signout(api: Api, request: Request) -> Response:
    """End the session server-side (its cookie stops working), clear the cookie."""
    from basewatch.auth import cleared_cookie, end_session

    request.single(())
    principal = principal_of(request)
    if principal.via != "session" or principal.user is None:
        raise HttpError(400, "signed in with a token, not a session: nothing to sign out")
    with api.database() as conn:
        end_session(conn, principal.session_id, principal.user, now=dt.datetime.now(dt.UTC))
    answer = redirect("/signin")
    cookie = cleared_cookie(secure=api.config.secure_cookie)
    return Response(
        answer.status, answer.content_type, answer.body, (*answer.headers, ("Set-Cookie", cookie))
    )

"""The portal over HTTP: a Starlette application (`make_app(portal, pages)`).

    GET  /                 the request form                  POST /   → check your mail, or why not
    GET  /sent             "check your mail"
    GET  /confirm/<token>  the confirmation page, with the Delist IP button (changes nothing)
    POST /confirm/<token>  the press: the delist and its result
    GET  /portal.css       the one stylesheet (no script anywhere: the pages work without it)

Rules every answer keeps:
- nothing the request carried is shown back (no field is refilled, no path or value echoed);
  a page shows the portal's own state only (`pages.py`);
- every redirect goes to a fixed path of ours, never to a place the request names;
- a POST needs the CSRF field matching the browser's cookie (SameSite=Strict, HttpOnly), and
  an Origin or Sec-Fetch-Site, when the browser sends one, that says it came from our pages;
- strict headers on everything (`SECURITY_HEADERS`: a CSP without scripts, no framing, a
  referrer only to ourselves, so the link's token never leaks to another site; not "no-referrer",
  with which Chromium sends `Origin: null` on our own form posts), `no-store` on every page;
- the client address is the peer's, or the trusted proxy's X-Forwarded-For (`limits.py`);
  links in mail start at `[portal] url`, never at the request's Host header.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailbot.portal import limits, metrics, signing
from mailbot.portal.pages import Pages
from mailbot.portal.press import press
from mailbot.portal.service import LANGUAGES, Portal

log = logging.getLogger(__name__)
MAX_BODY = 4096
FORMS = ("form", "confirm")
"""The pages that carry a form, and so the CSRF cookie and field."""
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
       "base-uri 'none'")
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}


class BodyTooLarge(Exception):
    pass


def security_headers(app: ASGIApp, https: bool) -> ASGIApp:
    """Every response gets the headers; pages are never cached (the stylesheet may be)."""
    extra = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
    if https:
        extra.append((b"strict-transport-security", b"max-age=31536000; includeSubDomains"))

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"server"]
                if not any(k.lower() == b"cache-control" for k, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers + extra}
            await send(message)

        await app(scope, receive, sending)

    return wrapped


def language(request: Request, chosen: str | None, default: str) -> str:
    """`lang` of the query or form when it is one we have, else the browser's first we have."""
    if chosen in LANGUAGES:
        return str(chosen)
    for part in request.headers.get("accept-language", "")[:200].split(","):
        tag = part.split(";")[0].strip().lower()[:2]
        if tag in LANGUAGES:
            return tag
    return default if default in LANGUAGES else "en"


async def form_body(request: Request) -> dict[str, str]:
    """The urlencoded body, at most MAX_BODY bytes; one value per field (the first)."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise ValueError("not a form")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise BodyTooLarge
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=10)
    return {k: v[0] for k, v in fields.items() if v}


class Web:
    def __init__(self, portal: Portal, pages: Pages) -> None:
        self.portal, self.pages = portal, pages
        base = urlsplit(portal.base_url)
        self.https = base.scheme == "https"
        self.origin = f"{base.scheme}://{base.netloc}".lower()
        self.cookie = "__Host-portal" if self.https else "portal_csrf"
        self.default_language = portal.config.templates.language

    # -- helpers --------------------------------------------------------------
    def client(self, request: Request) -> str:
        peer = request.client.host if request.client else None
        return limits.client_address(peer, request.headers.getlist("x-forwarded-for"), self.portal.trusted)

    def page(self, request: Request, lang: str, name: str, status: int = 200, **context: Any) -> Response:
        context.setdefault("token", "")
        cookie, fresh = request.cookies.get(self.cookie), False
        csrf = ""
        if name in FORMS:
            # only a page with a form hands out the cookie: a stray request (a favicon, a 404) must
            # not replace the cookie a form on another page was signed for
            if not (cookie and signing.COOKIE.match(cookie)):
                cookie, fresh = signing.new_cookie(), True
            assert cookie is not None
            csrf = signing.csrf_token(self.portal.key, cookie, "confirm" if context["token"] else "form",
                                      context["token"])
        html = self.pages.render(lang, name, {
            **context, "desk_name": self.portal.config.desk.name,
            "delist_address": self.portal.config.outgoing.from_address, "csrf": csrf,
            "link_hours": f"{self.portal.config.portal.link_hours:g}", "categories_hint": "5.7.606–5.7.649"})
        response = Response(html, status, media_type="text/html; charset=utf-8")
        if fresh:
            response.set_cookie(self.cookie, str(cookie), httponly=True, samesite="strict", secure=self.https,
                                path="/")
        if "retry_after" in context:
            response.headers["retry-after"] = str(context["retry_after"])
        metrics.REQUESTS.labels(name, str(status)).inc()
        return response

    def cross_site(self, request: Request) -> bool:
        origin = request.headers.get("origin")
        if origin is not None and origin.lower() != self.origin:
            return True
        site = request.headers.get("sec-fetch-site")
        return site is not None and site not in ("same-origin", "none")

    async def posted(self, request: Request, purpose: str, token: str = "") -> dict[str, str] | Response:
        """The form's fields, or the refusal: too large, not a form, from another site, no CSRF match."""
        lang = language(request, request.query_params.get("lang"), self.default_language)
        try:
            fields = await form_body(request)
        except BodyTooLarge:
            return self.page(request, lang, "error", 413, problem="large")
        except ValueError:
            return self.page(request, lang, "error", 415, problem="form")
        if self.cross_site(request) or not signing.csrf_ok(self.portal.key, request.cookies.get(self.cookie),
                                                           fields.get("csrf"), purpose, token):
            metrics.REFUSALS.labels("csrf").inc()
            return self.page(request, language(request, fields.get("lang"), self.default_language), "error", 403,
                             problem="csrf")
        return fields

    # -- routes ---------------------------------------------------------------
    async def form(self, request: Request) -> Response:
        lang = language(request, request.query_params.get("lang"), self.default_language)
        return self.page(request, lang, "form", problems=[])

    async def submit(self, request: Request) -> Response:
        fields = await self.posted(request, "form")
        if isinstance(fields, Response):
            return fields
        lang = language(request, fields.get("lang"), self.default_language)
        done = await run_in_threadpool(self.portal.submit, fields.get("address", ""), fields.get("ip", ""),
                                       self.client(request), lang)
        if done.answer == "mailed":
            metrics.REQUESTS.labels("form", "303").inc()
            return RedirectResponse(f"/sent?lang={lang}", 303)
        if done.answer == "invalid":
            return self.page(request, lang, "form", 400, problems=list(done.problems))
        if done.answer == "limited":
            assert done.limited is not None
            return self.page(request, lang, "limited", 429, retry_after=done.limited.retry_after,
                             minutes=max(1, -(-done.limited.retry_after // 60)))
        if done.answer == "unavailable":
            return self.page(request, lang, "unavailable", 503, retry_after=60)
        return self.page(request, lang, "refused")

    async def sent(self, request: Request) -> Response:
        return self.page(request, language(request, request.query_params.get("lang"), self.default_language), "sent")

    async def confirm(self, request: Request) -> Response:
        token = str(request.path_params["token"])
        seen = await run_in_threadpool(self.portal.view, token)
        lang = language(request, request.query_params.get("lang"), seen.language)
        if seen.state == "ready":
            return self.page(request, lang, "confirm", ip=seen.ip, token=token)
        if seen.state == "used":
            return self.page(request, lang, "result", ip=seen.ip, outcome=seen.outcome, used=True, ref="")
        return self.page(request, lang, "link", 410 if seen.state == "expired" else 404, state=seen.state)

    async def pressed(self, request: Request) -> Response:
        token = str(request.path_params["token"])
        fields = await self.posted(request, "confirm", token)
        if isinstance(fields, Response):
            return fields
        seen = await run_in_threadpool(self.portal.view, token)
        lang = language(request, fields.get("lang"), seen.language)
        done = await run_in_threadpool(press, self.portal, token, self.client(request))
        if done.state == "done":
            return self.page(request, lang, "result", ip=done.ip, outcome=done.outcome, used=False, ref=done.ref)
        if done.state == "used":
            return self.page(request, lang, "result", ip=done.ip, outcome=done.outcome, used=True, ref="")
        if done.state == "unavailable":
            return self.page(request, lang, "unavailable", 503, retry_after=done.retry_after)
        return self.page(request, lang, "link", 410 if done.state == "expired" else 404, state=done.state)

    async def stylesheet(self, request: Request) -> Response:
        return Response(self.pages.stylesheet, media_type="text/css; charset=utf-8",
                        headers={"cache-control": "public, max-age=86400"})

    async def not_found(self, request: Request, exc: Exception) -> Response:
        status = int(getattr(exc, "status_code", 404))
        lang = language(request, None, self.default_language)
        return self.page(request, lang, "error", status if status in (404, 405) else 404, problem="missing")


def flood_guard(app: ASGIApp, web: Web) -> ASGIApp:
    """Any request beyond `[portal] requests_per_minute` of one client: 429 before any work."""

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            wait = web.portal.flood.check(limits.client_key(web.client(request), web.portal.config.portal.client_v6))
            if wait:
                metrics.REFUSALS.labels("flood").inc()
                response = Response("Too many requests. Try again later.\n", 429, media_type="text/plain",
                                    headers={"retry-after": str(int(wait) + 1)})
                await response(scope, receive, send)
                return
        await app(scope, receive, send)

    return guarded


def access_log(app: ASGIApp) -> ASGIApp:
    """One line per request; a confirmation link's token is a credential and is never logged."""

    async def logged(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        start, status = time.monotonic(), [0]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        await app(scope, receive, sending)
        path = str(scope.get("path", ""))
        shown = "/confirm/…" if path.startswith("/confirm/") else path[:100]
        log.info("%s %s %s %.0fms", scope.get("method"), shown, status[0], (time.monotonic() - start) * 1000)

    return logged


def make_app(portal: Portal, pages: Pages) -> ASGIApp:
    web = Web(portal, pages)
    routes = [Route("/", web.form, methods=["GET"]), Route("/", web.submit, methods=["POST"]),
              Route("/sent", web.sent, methods=["GET"]),
              Route("/confirm/{token}", web.confirm, methods=["GET"]),
              Route("/confirm/{token}", web.pressed, methods=["POST"]),
              Route("/" + "portal.css", web.stylesheet, methods=["GET"])]
    handler: Callable[[Request, Exception], Awaitable[Response]] = web.not_found
    app = Starlette(routes=routes, exception_handlers={404: handler, 405: handler})
    app.router.redirect_slashes = False  # a redirect built from the request's Host is a redirect we do not choose
    return access_log(security_headers(flood_guard(app, web), web.https))

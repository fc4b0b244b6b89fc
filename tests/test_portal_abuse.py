"""The portal's abuse rules (issue #19), each with the attack it stops: httpx against the ASGI
app in-process, on a real database (SQLite and PostgreSQL) with the `table` listing source."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from portal_app import BASE, SECRET, PortalWorld

from mailbot import clock
from mailbot.portal import signing
from mailbot.portal.limits import client_address, trusted_networks
from mailbot.portal.web import SECURITY_HEADERS

IP = "203.0.113.45"
World = Callable[..., PortalWorld]


def mailed(r: object) -> bool:
    return getattr(r, "status_code", 0) == 303 and getattr(r, "headers", {}).get("location") == "/sent?lang=en"


# -- limits -----------------------------------------------------------------------------------------


def test_one_client_cannot_sweep_the_list_past_its_hourly_limit(make_portal: World) -> None:
    """Attack: one host asks about IP after IP to map the list (or to mail many addresses)."""
    w = make_portal(portal={"client_per_hour": 4})
    w.list_ip(f"{IP}/32")
    b = w.browser("198.51.100.7")
    answers = [b.ask(f"user{n}@example.org", f"203.0.113.{n}").status_code for n in range(10, 14)]
    assert answers == [200, 200, 200, 200]  # not listed: refused, but counted
    r = b.ask("user5@example.org", IP)
    assert r.status_code == 429 and 3590 <= int(r.headers["retry-after"]) <= 3600
    assert "Too many requests" in r.text and IP not in r.text
    assert w.links() == []  # the listed IP got no mail either: the limit came first
    assert mailed(w.browser("198.51.100.8").ask("user5@example.org", IP))  # another client is not held


def test_a_forged_x_forwarded_for_does_not_reset_the_client_limit(make_portal: World) -> None:
    """Attack: a client sends X-Forwarded-For with a new address each time to look like many clients."""
    w = make_portal(portal={"client_per_hour": 2})
    b = w.browser("198.51.100.7")  # not a trusted proxy
    codes = [b.ask(f"u{n}@example.org", f"203.0.113.{n}", **{"X-Forwarded-For": f"192.0.2.{n}"}).status_code
             for n in range(1, 4)]
    assert codes == [200, 200, 429]
    assert {r.client for r in w.requests()} == {"198.51.100.7"}


def test_behind_the_trusted_proxy_each_forwarded_client_is_counted_and_a_prepended_hop_is_not_believed(
        make_portal: World) -> None:
    """Attack: a client behind the proxy prepends a fake hop; the proxy appends the real address."""
    w = make_portal(portal={"client_per_hour": 2})
    proxy = w.browser("127.0.0.1")
    for n in range(2):
        proxy.ask(f"u{n}@example.org", f"203.0.113.{n + 1}", **{"X-Forwarded-For": f"192.0.2.{n}, 198.51.100.7"})
    r = proxy.ask("u9@example.org", "203.0.113.9", **{"X-Forwarded-For": "192.0.2.77, 198.51.100.7"})
    assert r.status_code == 429
    assert proxy.ask("u8@example.org", "203.0.113.8", **{"X-Forwarded-For": "198.51.100.8"}).status_code == 200
    assert [r.client for r in w.requests()] == ["198.51.100.7", "198.51.100.7", "198.51.100.8"]


def test_the_client_address_is_read_from_the_right_and_only_through_trusted_hops() -> None:
    trusted = trusted_networks(("127.0.0.1", "10.0.0.0/8"))
    assert client_address("198.51.100.7", ["1.2.3.4"], trusted) == "198.51.100.7"  # untrusted peer: header ignored
    assert client_address("127.0.0.1", ["1.2.3.4, 198.51.100.7"], trusted) == "198.51.100.7"
    assert client_address("127.0.0.1", ["198.51.100.7, 10.1.1.1"], trusted) == "198.51.100.7"  # two proxies
    assert client_address("127.0.0.1", ["garbage"], trusted) == "127.0.0.1"
    assert client_address("::ffff:198.51.100.7", [], trusted) == "198.51.100.7"


def test_an_ipv6_client_is_one_client_across_its_64(make_portal: World) -> None:
    """Attack: a host with a /64 takes a new address for each request."""
    w = make_portal(portal={"client_per_hour": 2})
    codes = [w.browser(f"2001:db8:5:6::{n}").ask(f"u{n}@example.org", f"203.0.113.{n}").status_code
             for n in range(1, 4)]
    assert codes == [200, 200, 429]
    assert {r.client for r in w.requests()} == {"2001:db8:5:6::/64"}


def test_one_address_gets_a_few_mails_a_day_however_it_is_spelt(make_portal: World) -> None:
    """Attack: mail-bombing a victim's address through the portal from many clients."""
    w = make_portal(portal={"address_per_day": 2})
    w.list_ip(f"{IP}/32")
    spellings = ["victim@example.org", "Victim@Example.org", "victim+x@example.org"]
    answers = [w.browser(f"198.51.100.{n}").ask(a, IP) for n, a in enumerate(spellings, 10)]
    assert [mailed(r) for r in answers] == [True, True, False]
    assert answers[2].status_code == 429 and int(answers[2].headers["retry-after"]) > 86000
    assert len(w.links()) == 2


def test_one_ip_is_asked_about_a_few_times_a_day(make_portal: World) -> None:
    """Attack: many clients and addresses requesting the same IP (a botnet delisting its own IP)."""
    w = make_portal(portal={"ip_per_day": 2})
    w.list_ip(f"{IP}/32")
    answers = [w.browser(f"198.51.100.{n}").ask(f"a{n}@example.org", IP) for n in range(3)]
    assert [mailed(r) for r in answers[:2]] == [True, True] and answers[2].status_code == 429


def test_a_network_is_not_delisted_ip_by_ip(make_portal: World) -> None:
    """Attack: walking a listed /24 one IP at a time, each from another client and address."""
    w = make_portal(portal={"network_per_day": 3})
    for n in range(1, 6):
        w.list_ip(f"203.0.113.{n}/32")
    codes = [w.browser(f"198.51.100.{n}").ask(f"a{n}@example.org", f"203.0.113.{n}").status_code
             for n in range(1, 5)]
    assert codes == [303, 303, 303, 429]
    assert mailed(w.browser("198.51.100.9").ask("z@example.org", "198.51.100.200")) is False  # another network


def test_a_limit_says_nothing_about_the_list(make_portal: World) -> None:
    """Attack: reading "listed or not" off which requests a limit refuses. Listed and unlisted IPs
    count the same, so the limit trips at the same request for both."""
    w = make_portal(portal={"ip_per_day": 2})
    w.list_ip(f"{IP}/32")
    for ip in (IP, "203.0.113.99"):
        codes = [w.browser(f"198.51.100.{n}").ask(f"a{n}@example.org", ip).status_code for n in range(3)]
        assert codes[2] == 429, ip


def test_a_flood_of_any_request_is_stopped_before_the_database(make_portal: World) -> None:
    """Attack: hammering pages (or the link checker) faster than any person does."""
    w = make_portal(portal={"requests_per_minute": 5})
    b = w.browser("198.51.100.7")
    codes = [b.get("/").status_code for _ in range(6)]
    assert codes == [200] * 5 + [429]
    r = b.get("/confirm/1.x.1.y")
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert w.browser("198.51.100.8").get("/").status_code == 200


# -- what the answers tell ------------------------------------------------------------------------------


def test_the_form_tells_one_bit_listed_in_a_portal_category_or_not(make_portal: World) -> None:
    """Attack: learning a listing's category, reason or history from the form's answers."""
    w = make_portal()
    w.list_ip("203.0.113.1/32", "5.7.606")
    w.list_ip("203.0.113.2/32", "spam")       # listed, but not in a portal category
    w.list_ip("203.0.113.0/24", "5.7.640")   # 203.0.113.3 is inside a listed network
    pages = {ip: w.browser(f"198.51.100.{n}").ask(f"a{n}@example.org", ip)
             for n, ip in enumerate(["203.0.113.2", "192.0.2.7", "203.0.113.1"], 1)}
    assert mailed(pages["203.0.113.1"])
    assert pages["203.0.113.2"].status_code == pages["192.0.2.7"].status_code == 200
    assert pages["203.0.113.2"].text == pages["192.0.2.7"].text  # byte for byte: nothing to tell them apart
    assert "trap hits" not in pages["203.0.113.2"].text and "spam" not in pages["203.0.113.2"].text


def test_nothing_the_request_carries_is_shown_back(make_portal: World) -> None:
    """Attack: reflected XSS or content injection through a field, the language or the path."""
    w = make_portal()
    b = w.browser()
    evil = '"><script>alert(1)</script><a href="https://evil.example">'
    for page in (b.ask(evil, evil), b.ask("x@example.org", evil), b.ask(evil, IP),
                 b.post("/", data={"csrf": b.csrf(), "lang": evil, "address": evil, "ip": "1.2.3.4"}),
                 b.get("/" + evil), b.get("/?lang=" + evil), b.get("/confirm/" + evil), b.get("/sent?lang=" + evil)):
        assert "<script>" not in page.text and "evil.example" not in page.text and "alert(1)" not in page.text
        assert 'lang="en"' in page.text
    assert b.ask(evil, evil).status_code == 400


def test_there_is_no_redirect_to_a_place_the_request_names(make_portal: World) -> None:
    """Attack: an open redirect (a link to our site that lands on theirs), and Host header poisoning
    of the link we mail."""
    w = make_portal()
    w.list_ip(f"{IP}/32")
    b = w.browser()
    for path in ("//evil.example/", "/\\evil.example", "/sent/", "/confirm/", "/?next=https://evil.example"):
        r = b.get(path)
        assert r.status_code in (200, 404) and "location" not in r.headers, path
    token = b.csrf()
    r = b.post("/?next=https://evil.example", headers={"Host": "evil.example"},
               data={"csrf": token, "lang": "en", "address": "a@example.org", "ip": IP, "next": "https://evil.example"})
    assert r.headers.get("location") == "/sent?lang=en"
    assert w.links()[0].startswith(BASE + "/confirm/")  # the configured address, not the Host header


def test_a_cross_site_post_changes_nothing(make_portal: World) -> None:
    """Attack: another site's page posts our form (to mail-bomb from visitors' browsers) or presses
    the button for a visitor who has the link open."""
    w = make_portal()
    w.list_ip(f"{IP}/32")
    b = w.browser()
    form = {"lang": "en", "address": "a@example.org", "ip": IP}
    assert b.post("/", data=form).status_code == 403                           # no cookie, no field
    assert b.post("/", data={**form, "csrf": "A" * 43}).status_code == 403     # a guessed field
    token = b.csrf()
    other = w.browser()                                                        # a field from another browser
    assert other.post("/", data={**form, "csrf": token}).status_code == 403
    assert b.post("/", data={**form, "csrf": token}, headers={"Origin": "https://evil.example"}).status_code == 403
    assert b.post("/", data={**form, "csrf": token}, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert w.requests() == [] and w.outbox() == []
    assert mailed(b.post("/", data={**form, "csrf": token}, headers={"Origin": BASE, "Sec-Fetch-Site": "same-origin"}))
    link = w.links()[0]
    path = "/" + link.split("/", 3)[3]
    form_token = b.csrf()
    assert b.post(path, data={"csrf": form_token}).status_code == 403         # the form's field is not the button's
    assert b.post(path, data={"lang": "en"}).status_code == 403
    assert w.listed(IP) and w.requests()[0].used_at is None


def test_every_answer_carries_the_security_headers(make_portal: World) -> None:
    w = make_portal(portal={"requests_per_minute": 8})
    b = w.browser()
    answers = [b.get("/"), b.get("/sent"), b.get("/nowhere"), b.get("/portal.css"), b.post("/", data={}),
               b.get("/confirm/1.abc.1.x")]
    answers += [b.get("/") for _ in range(3)]  # the last one is the flood guard's 429
    assert answers[-1].status_code == 429
    for r in answers:
        for k, v in SECURITY_HEADERS.items():
            assert r.headers.get(k) == v, (r.request.url, k)
        assert "server" not in r.headers
    assert "script-src" not in SECURITY_HEADERS["content-security-policy"]
    assert all(r.headers["cache-control"] == "no-store" for r in answers if r.request.url.path != "/portal.css")
    cookie = answers[0].headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert "<script" not in answers[0].text


def test_an_https_portal_sends_hsts_and_a_host_only_secure_cookie(make_portal: World) -> None:
    w = make_portal(portal={"url": "https://delist.example.org/"})
    from portal_app import Browserless

    r = Browserless(w.app, base="https://delist.example.org").get("/")
    assert r.headers["strict-transport-security"].startswith("max-age=31536000")
    assert r.headers["set-cookie"].startswith("__Host-portal=") and "secure" in r.headers["set-cookie"].lower()


def test_a_huge_or_strange_body_is_refused_before_it_is_read_whole(make_portal: World) -> None:
    w = make_portal()
    b = w.browser()
    token = b.csrf()
    assert b.post("/", data={"csrf": token, "address": "a" * 10000, "ip": IP}).status_code == 413
    assert b.post("/", content=b"{}", headers={"Content-Type": "application/json"}).status_code == 415
    assert w.requests() == []


def test_private_ips_and_the_desks_own_address_are_refused(make_portal: World) -> None:
    w = make_portal()
    b = w.browser()
    assert "private or reserved" in b.ask("a@example.org", "10.1.2.3").text
    assert "this desk's own address" in b.ask("Delist@Example.org", IP).text
    assert w.requests() == []


# -- the link ---------------------------------------------------------------------------------------------


def test_a_changed_forged_or_expired_link_delists_nothing(make_portal: World) -> None:
    """Attack: guessing or editing a link (another request's id, a later expiry), or signing one
    with a key of one's own."""
    w = make_portal()
    w.list_ip(f"{IP}/32")
    b = w.browser()
    assert mailed(b.ask("a@example.org", IP))
    link = w.links()[0]
    token = link.rsplit("/", 1)[1]
    rid, nonce, expires, mac = token.split(".")
    forged = [f"{int(rid) + 1}.{nonce}.{expires}.{mac}", f"{rid}.{nonce}.{int(expires) + 86400}.{mac}",
              f"{rid}.{nonce[:-1]}A.{expires}.{mac}",
              signing.sign_link(b"another-key-of-at-least-32-characters!!",
                                signing.Link(int(rid), nonce, int(expires))),
              token[:-1], token + "x"]
    for t in forged:
        r = b.get("/confirm/" + t)
        assert r.status_code == 404 and "not valid" in r.text, t
        assert b.post("/confirm/" + t, data={"csrf": signing.csrf_token(SECRET.encode(), "x" * 43, "confirm", t)}) \
            .status_code in (403, 404)
    w.portal.wall = lambda: float(expires) + 1  # a day later
    r = b.get("/confirm/" + token)
    assert r.status_code == 410 and "expired" in r.text
    assert w.listed(IP) and w.requests()[0].used_at is None


def test_opening_the_link_changes_nothing_and_the_button_works_once(make_portal: World) -> None:
    """Attack (and accident): a mail scanner opening every link; a double click; a replayed POST."""
    w = make_portal()
    w.list_ip(f"{IP}/32")
    b = w.browser()
    b.ask("a@example.org", IP)
    link = w.links()[0]
    path = "/" + link.split("/", 3)[3]
    for _ in range(3):
        assert "Delist IP" in b.get(path).text
    assert w.listed(IP) and w.requests()[0].used_at is None
    token = b.csrf(path)
    first = b.post(path, data={"csrf": token})
    again = b.post(path, data={"csrf": token})
    assert f"{IP} is delisted" in first.text and "has been used already" in again.text
    assert not w.listed(IP)
    assert len(w.outbox("portal_result")) == 1
    [ticket] = w.tickets()
    assert sum(e.kind == "portal_delist" for e in w.events(ticket.id or 0)) == 1


def test_a_repeat_listing_cannot_delist_itself_and_goes_to_staff(make_portal: World) -> None:
    """The rule of #14: listed again within listing.repeat_days of its last delisting."""
    w = make_portal(listing={"repeat_days": 90})
    w.list_ip(f"{IP}/32", since=clock.utcnow() - timedelta(days=20))
    b = w.browser()
    b.ask("a@example.org", IP)
    b.press(w.links()[0])
    assert not w.listed(IP)                                    # delisted once, through the portal
    w.list_ip(f"{IP}/32")                                      # listed again ten minutes later
    b2 = w.browser("198.51.100.9")
    assert mailed(b2.ask("b@example.org", IP))                 # the form does not tell (one bit)
    r = b2.press(w.links()[1])
    assert "A person will review" in r.text
    assert w.listed(IP)
    ticket = w.tickets()[-1]
    assert ticket.state == "open" and ticket.due_at is not None
    events = w.events(ticket.id or 0)
    assert any(e.kind == "portal_delist" and "a repeat" in (e.detail or "") for e in events)
    result = w.outbox("portal_result")[-1]
    assert "passed to our team" in result.subject


def test_the_request_joins_the_ips_redirected_ticket(make_portal: World) -> None:
    """A sender the desk sent here (a 5.7.606 forward, ticket redirected): the portal request lands
    on that ticket, with the sender added, not on a new one."""
    from sqlmodel import Session

    from mailbot.desk import tickets
    from mailbot.store.states import TicketState

    w = make_portal()
    w.list_ip(f"{IP}/32")
    now = clock.utcnow()
    with Session(w.engine) as s:
        t = tickets.open_ticket(s, now=now, state=TicketState.REDIRECTED, sender="ops@fabrikam.example", ip=IP,
                                status="5.7.606", reply_code="550")
        s.commit()
        tid = t.id
    b = w.browser()
    b.ask("ops@fabrikam.example", IP)
    r = b.press(w.links()[0])
    assert f"DL-{tid:06d}" in r.text
    [ticket] = w.tickets()
    assert ticket.id == tid and ticket.state == "closed"
    assert [e.kind for e in w.events(tid or 0)][-3:] == ["portal_request", "portal_delist", "state"]


def test_a_german_request_gets_german_pages_and_mail(make_portal: World) -> None:
    w = make_portal()
    w.list_ip(f"{IP}/32")
    b = w.browser()
    assert "Link zuschicken" in b.get("/", headers={"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"}).text
    assert b.ask("a@example.org", IP, lang="de").headers["location"] == "/sent?lang=de"
    [mail] = w.outbox("portal_confirm")
    assert mail.subject == f"Bestätigen: {IP} von der Sperrliste entfernen"
    link = w.links()[0]
    assert "IP entfernen" in b.get("/" + link.split("/", 3)[3]).text  # the link opens in the request's language
    assert f"{IP} ist entfernt" in b.press(link, lang="de").text
    assert w.outbox("portal_result")[0].subject == f"[DL-000001] {IP} wurde von der Sperrliste entfernt"


def test_a_burst_gets_exactly_the_limit_and_not_a_request_more(make_portal: World) -> None:
    """Attack: thirty requests at once for one victim's address, so that all of them read "under
    the limit" before any is written. The count and the row are one serialised transaction."""
    w = make_portal(portal={"address_per_day": 3})
    w.list_ip(f"{IP}/32")
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda n: w.portal.submit("victim@example.org", IP, f"198.51.100.{n}", "en").answer,
                                range(30)))
    assert answers.count("mailed") == 3 and answers.count("limited") == 27
    assert len(w.links()) == 3 and len(w.requests()) == 3


def test_two_presses_at_once_delist_once_and_record_once(make_portal: World) -> None:
    """A double click that reaches two workers together: the delist key and the conditional
    update make it one delist, one set of events and one result mail."""
    from mailbot.portal.press import press

    w = make_portal()
    w.list_ip(f"{IP}/32")
    w.browser().ask("a@example.org", IP)
    token = w.links()[0].rsplit("/", 1)[1]
    with ThreadPoolExecutor(4) as pool:
        done = list(pool.map(lambda _n: press(w.portal, token, "198.51.100.7"), range(4)))
    assert sorted(d.state for d in done).count("done") == 1
    assert {d.outcome for d in done} == {"delisted"}
    [ticket] = w.tickets()
    assert [e.kind for e in w.events(ticket.id or 0)].count("portal_delist") == 1
    assert len(w.outbox("portal_result")) == 1 and not w.listed(IP)

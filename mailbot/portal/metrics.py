"""The portal's Prometheus counters (`[portal] metrics_port`; 0: not served).

Their own registry: the portal runs as its own process beside the daemon, and a scrape of it
says what it did: requests by page, links mailed, confirmations (presses of the button),
delists by outcome, refusals by reason.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, start_http_server

REGISTRY = CollectorRegistry()
REQUESTS = Counter("mailbot_portal_requests", "HTTP requests answered, by page and status", ["page", "status"],
                   registry=REGISTRY)
MAILED = Counter("mailbot_portal_links_mailed", "Confirmation links queued as mail", registry=REGISTRY)
CONFIRMATIONS = Counter("mailbot_portal_confirmations", "Presses of the Delist IP button that were carried out",
                        registry=REGISTRY)
DELISTS = Counter("mailbot_portal_delists", "Outcomes of confirmed requests: delisted, not_listed, to_staff",
                  ["outcome"], registry=REGISTRY)
REFUSALS = Counter("mailbot_portal_refusals", "Requests refused, by reason (invalid, limit_client, limit_address, "
                   "limit_ip, limit_network, flood, csrf, bad_link, expired_link, used_link, "
                   "not_in_portal_category, lookup_failed, unavailable)", ["reason"], registry=REGISTRY)


def serve(address: str, port: int) -> None:
    start_http_server(port, addr=address, registry=REGISTRY)

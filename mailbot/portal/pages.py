"""The portal's pages: Jinja2 templates under `templates/portal/`, per language like the mails.

A page NAME is `portal/<language>/NAME.html.j2`, else `portal/NAME.html.j2` (English), first
in `[templates] dir`, then in the shipped templates; autoescaped, and strict: a page that
names a value it was not given fails at once rather than rendering a hole. What a page is
given comes from the portal's own state (the IP of a signed request, a ticket reference,
the desk's name and address), never from what the request carried.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from mailbot.outgoing.render import PACKAGED, SOURCE_TREE

PAGES = ("form", "sent", "refused", "limited", "unavailable", "confirm", "result", "link", "error")
STYLESHEET = "portal.css"


def page_dirs(override: Path | None, language: str) -> list[Path]:
    dirs: list[Path] = []
    for base in (override, PACKAGED, SOURCE_TREE):
        if base is None or not (base / "portal").is_dir():
            continue
        for d in (base / "portal" / language, base / "portal"):
            if d.is_dir() and d not in dirs:
                dirs.append(d)
    return dirs


class Pages:
    def __init__(self, override: Path | None, languages: tuple[str, ...]) -> None:
        self.envs: dict[str, jinja2.Environment] = {}
        for lang in languages:
            dirs = page_dirs(override, lang)
            if not dirs:
                raise FileNotFoundError("no templates/portal folder found (set [templates] dir)")
            self.envs[lang] = jinja2.Environment(loader=jinja2.FileSystemLoader([str(d) for d in dirs]),
                                                 autoescape=True, undefined=jinja2.StrictUndefined)
        self.stylesheet = self._stylesheet(override)

    @staticmethod
    def _stylesheet(override: Path | None) -> bytes:
        for d in page_dirs(override, "en"):
            if (d / STYLESHEET).is_file():
                return (d / STYLESHEET).read_bytes()
        return b""

    def render(self, language: str, name: str, context: dict[str, Any]) -> str:
        env = self.envs.get(language) or next(iter(self.envs.values()))
        return env.get_template(f"{name}.html.j2").render({**context, "lang": language})

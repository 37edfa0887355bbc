"""Every internal link of the built site must lead somewhere: the file, and its #anchor.

MkDocs checks the links written in Markdown (``validation:`` in mkdocs.yml); this checks the
HTML that was actually built, so it also covers the navigation, the theme, the CLI reference
generated at build time and the cross-references of the API reference. For each ``href`` and
``src`` that is not an external URL it resolves the target file (``dir/`` means
``dir/index.html``) and, when there is a ``#fragment``, an element with that ``id`` (or an
``<a name>``) in the target page.

As a MkDocs hook (mkdocs.yml ``hooks:``) it runs after every build and logs one warning per
broken link, which ``mkdocs build --strict`` turns into a failed build. As a script it checks
a built site folder and exits 1 on a broken link::

    python docs/hooks/check_links.py site
"""

from __future__ import annotations

import logging
import posixpath
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["BrokenLink", "check_site", "main", "on_post_build"]

log = logging.getLogger("mkdocs.hooks.check_links")

_LINKING = {("a", "href"), ("link", "href"), ("img", "src"), ("script", "src"), ("source", "src")}


@dataclass(frozen=True, slots=True)
class BrokenLink:
    """A link in ``page`` (relative to the site) to ``url`` that does not resolve, and why."""

    page: str
    url: str
    problem: str

    def __str__(self) -> str:
        return f"{self.page}: {self.url!r}: {self.problem}"


class _Page(HTMLParser):
    """The ids (anchors) of one HTML page and the URLs it links to."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name == "id" or (tag == "a" and name == "name"):
                self.ids.add(value)
            elif (tag, name) in _LINKING:
                self.urls.append(value)


@cache
def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8", errors="replace"))
    page.close()
    return page


def _is_external(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.scheme or parts.netloc) or url.startswith("//")


def _target(site: Path, page: Path, path: str) -> Path:
    """The file a relative (or site-absolute) ``path`` in ``page`` points to."""
    base = "" if path.startswith("/") else posixpath.dirname(page.relative_to(site).as_posix())
    target = site / posixpath.normpath(posixpath.join(base, path.lstrip("/")))
    if path.endswith("/") or target.is_dir():
        target = target / "index.html"
    return target


def _check_page(site: Path, page: Path) -> Iterator[BrokenLink]:
    name = page.relative_to(site).as_posix()
    for url in _parse(page).urls:
        if _is_external(url):
            continue
        parts = urlsplit(url)
        path, fragment = unquote(parts.path), unquote(parts.fragment)
        target = _target(site, page, path) if path else page
        try:
            target.resolve().relative_to(site.resolve())
        except ValueError:
            yield BrokenLink(name, url, "points outside the site")
            continue
        if not target.is_file():
            yield BrokenLink(name, url, f"no such file: {target.relative_to(site).as_posix()}")
            continue
        if fragment and target.suffix == ".html" and fragment not in _parse(target).ids:
            yield BrokenLink(
                name, url, f"no id {fragment!r} in {target.relative_to(site).as_posix()}"
            )


def check_site(site: Path) -> list[BrokenLink]:
    """Every broken internal link of the HTML pages under ``site``, page by page."""
    _parse.cache_clear()
    broken: list[BrokenLink] = []
    for page in sorted(site.rglob("*.html")):
        broken.extend(_check_page(site, page))
    return broken


def on_post_build(*, config: Any) -> None:
    """MkDocs hook: warn about each broken link (``--strict`` makes the build fail)."""
    broken = check_site(Path(config["site_dir"]))
    for link in broken:
        log.warning("broken link: %s", link)
    if not broken:
        log.info("check_links: every internal link and anchor resolves")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not Path(args[0]).is_dir():
        print("usage: python docs/hooks/check_links.py SITE_DIR", file=sys.stderr)
        return 2
    broken = check_site(Path(args[0]))
    for link in broken:
        print(f"broken link: {link}", file=sys.stderr)
    print(f"check_links: {len(broken)} broken link(s) in {args[0]}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())

"""Addresses that must come from the router, judged on the learner's app served where no written address
lands: under a prefix (as a sub-application, as behind a proxy that adds a path), with each named route
moved under a prefix of its own besides.

A whole address written by hand (`/poll/5`) misses the first move; one pasted onto another route's
address (`url('index') + 'poll/5'`, `url('poll', ...) + '/vote'`, `request.path` edited) misses the second,
because no two routes' addresses begin alike any more. Only `url(name, ...)` / `url_for` of that very route
is right. The prefixes change on every run.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from tests.conftest import Learner, ServedApp

ROUTES = ("index", "poll", "vote", "results", "static")


def _apart() -> dict[str, str]:
    # Hex only: no route's name or path can appear inside another's prefix (request.path.replace('/vote',
    # ...) must not hit a prefix).
    # Distinct on every draw: two routes under one prefix would let a pasted address through.
    tokens: set[str] = set()
    while len(tokens) < len(ROUTES):
        tokens.add(f"/x{secrets.token_hex(3)}")
    return dict(zip(ROUTES, sorted(tokens), strict=True))


@dataclass(frozen=True)
class Layout:
    """Where the judge serves the app: `prefix` for all of it, then `apart[name]` for one route."""

    prefix: str = field(default_factory=lambda: f"/polls-{secrets.token_hex(3)}")
    apart: dict[str, str] = field(default_factory=_apart)

    def serve(self, learner: Learner, config: dict) -> ServedApp:
        return learner.serve(config, mount=self.prefix, apart=self.apart)

    def url(self, name: str, path: str) -> str:
        """Where route `name`, at `path` in the learner's own app (/poll/5), is served now."""
        return f"{self.prefix}{self.apart[name]}{path}"

    @property
    def told(self) -> str:
        """The first words of a failure: what the judge did to the app."""
        moved = ", ".join(f"{name} under {extra}" for name, extra in self.apart.items())
        return (
            f"the judge served your app under {self.prefix}/ (as behind a proxy that adds a path) and put "
            f"each named route under a prefix of its own ({moved}), so only the router's own address of a "
            "route leads to it"
        )

    def diagnose(self, found: str | None, name: str, path: str, where: str = "template") -> str:
        """What `found` is, in words, when it is not where route `name` at `path` is served now; `where` the
        address was made: the template, or the view."""
        if not found:
            return "none"
        if found == path:
            done = "written into the template" if where == "template" else "pasted together in the view"
            return f"{found}: an address {done} does not move with the app"
        for other, extra in self.apart.items():
            if other != name and found.startswith(f"{self.prefix}{extra}"):
                return (
                    f"{found}: the address of the '{other}' route with text pasted on (url('{other}') + "
                    f"'...', or request.path edited), which is not where the '{name}' route is"
                )
        if found.endswith(path):
            return (
                f"{found}: an address pasted together from pieces (another route's address, request.path "
                f"edited), which is not where the '{name}' route is"
            )
        return found

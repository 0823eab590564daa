"""Step 8: the static folder served under /static/ (and nothing outside it); pages link the stylesheet.

The learner's app runs in its own process and is reached over HTTP; requests that try to leave static/ are
sent byte for byte over a raw socket. Files the judge needs (a stylesheet with random content, a secret
outside static/, symlinks pointing at it) are written into the learner's folder for one check and removed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
import secrets
from collections.abc import AsyncIterator, Iterator
from html.parser import HTMLParser
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import Learner, ServedApp, http_session, served_once, valid_config, why_it_ended
from tests.moved import Layout
from workbook.pg import free_port

# Requests that try to climb out of static/, sent byte for byte (an HTTP client would tidy them up first).
ESCAPES = [
    "/static/../routes.py",
    "/static/../__init__.py",
    "/static/%2e%2e/routes.py",
    "/static/%2E%2E/routes.py",
    "/static/..%2froutes.py",
    "/static/..%2Froutes.py",
    "/static/%2e%2e%2froutes.py",
    "/static/..%5croutes.py",
    "/static/.%2e/routes.py",
    "/static/../../../../config/polls.yaml",
    "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/config/polls.yaml",
    "/static/..%2f..%2f..%2f..%2fconfig%2fpolls.yaml",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/../../../../../../../../etc/passwd",
]

# What the protected files contain: none of it may come back.
SECRETS = [b"def setup_routes", b'"""The polls app', b"aiohttpdemo_pass", b"root:x:0:0"]
REFUSED = (400, 403, 404)
NO_ESCAPE_HINT = (
    "Hint: serve the folder with add_static and keep follow_symlinks off; never join request paths to a "
    "folder yourself."
)


@pytest.fixture(scope="module")
def sites() -> dict[int | None, ServedApp]:
    return {}


@pytest.fixture
def site(module_learner: Learner, sites, pg_database) -> ServedApp:
    """One app from the learner's init_app(config) for the module's checks: they only read."""

    def serve() -> ServedApp:
        pg_database.run_sql_file("schema.sql", "seed.sql")
        return module_learner.serve(valid_config(pg_database))

    return served_once(module_learner, sites, serve)


@pytest.fixture
async def client(site: ServedApp) -> AsyncIterator[aiohttp.ClientSession]:
    async with http_session(site.url) as session:
        yield session


async def raw_get(port: int, target: str) -> tuple[int, bytes]:
    """Send `GET target` exactly as written and return (status, whole response)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        request = f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        writer.write(request.encode("ascii"))
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return int(data.split(b" ", 2)[1]), data


def static_dir(tree: Path) -> Path:
    return tree / "aiohttpdemo_polls" / "static"


@contextlib.contextmanager
def judge_files(tree: Path) -> Iterator[dict[str, object]]:
    """A random stylesheet inside static/, a secret outside it, and symlinks from static/ to the secret.

    Everything is removed afterwards, whatever happens. Names and contents change every run, so an app
    cannot know them in advance.
    """
    token = secrets.token_hex(6)
    folder = static_dir(tree)
    made: list[Path] = []
    try:
        sheet = folder / f"judge-{token}.css"
        sheet_body = f"/* {token} */ body {{ color: #{token[:6]}; }}\n".encode()
        secret = tree / f"judge-secret-{token}.txt"  # beside the package: readable by the learner's process
        secret_body = f"judge secret {secrets.token_hex(16)}".encode()
        link = folder / f"judge-link-{token}.txt"
        link_dir = folder / f"judge-dir-{token}"
        for path, content in ((sheet, sheet_body), (secret, secret_body)):
            made.append(path)
            path.write_bytes(content)
        made.append(link)
        link.symlink_to(secret)
        made.append(link_dir)
        link_dir.symlink_to(tree, target_is_directory=True)
    except OSError as exc:
        for path in reversed(made):
            with contextlib.suppress(OSError):
                path.unlink()
        pytest.fail(f"the judge could not write its test files into {folder}: {exc}", pytrace=False)
    try:
        yield {
            "sheet": f"/static/{sheet.name}", "sheet_body": sheet_body, "secret_body": secret_body,
            "links": [f"/static/{link.name}", f"/static/{link_dir.name}/{secret.name}"],
        }  # fmt: skip
    finally:
        for path in reversed(made):
            with contextlib.suppress(OSError):
                path.unlink()


async def fetch(client: aiohttp.ClientSession, path: str) -> tuple[int, str, bytes]:
    """GET path: (status, content type, body), the connection released."""
    async with client.get(path) as response:
        return response.status, response.content_type, await response.read()


async def expect_stylesheet(client) -> None:
    status, _, _ = await fetch(client, "/static/style.css")
    assert status == 200, (
        f"expected /static/style.css to be served (see the first check of this task), got {status}"
    )


# --- task 1: the static route ----------------------------------------------------------------------------


@pytest.mark.task(1)
async def test_stylesheet_is_served_as_css(tree, client):
    status, content_type, body = await fetch(client, "/static/style.css")
    assert status == 200, (
        f"expected GET /static/style.css to answer 200, got {status}. "
        "Hint: app.router.add_static('/static/', path=PROJECT_ROOT / 'static', name='static')."
    )
    assert content_type == "text/css", (
        f"expected the content type text/css, got {content_type}: browsers ignore a stylesheet "
        "served as anything else"
    )
    assert body == (static_dir(tree) / "style.css").read_bytes(), (
        f"expected the body to be static/style.css, unchanged; got {body[:120]!r}"
    )


# Runs in a process of its own: the app is built and served after a change of directory, as when it is
# started from anywhere else than the step folder. A folder given as a relative path is not found then.
FROM_ANOTHER_DIRECTORY = """
import json, os, sys
sys.path.insert(0, {tree!r})
os.chdir("/")
from aiohttp import web
from aiohttpdemo_polls.main import init_app
web.run_app(init_app(json.loads({config!r})), host="127.0.0.1", port={port}, print=None)
"""
FROM_THE_CODE_HINT = (
    "Hint: find the folder from the code, path=PROJECT_ROOT / 'static' (PROJECT_ROOT is "
    "Path(__file__).resolve().parent), never a relative path such as 'static' or 'aiohttpdemo_polls/static', "
    "which names a folder under the directory the app happens to be started from."
)


@pytest.mark.task(1)
async def test_stylesheet_is_served_when_started_from_another_directory(tree, polls_process, pg_database):
    port = free_port()
    code = FROM_ANOTHER_DIRECTORY.format(tree=str(tree), config=json.dumps(valid_config(pg_database)),
                                         port=port)  # fmt: skip
    command = polls_process.start_python(code)
    try:
        polls_process.wait_for_port(command, port)
    except pytest.fail.Exception:
        pytest.fail(f"started from the folder / (not the step folder), the app did not start: "
                    f"{why_it_ended(command.output())}\n{FROM_THE_CODE_HINT}", pytrace=False)  # fmt: skip
    async with http_session() as session:
        status, _, body = await fetch(session, f"http://127.0.0.1:{port}/static/style.css")
    assert status == 200 and body == (static_dir(tree) / "style.css").read_bytes(), (
        f"started from the folder / (not the step folder), the app answered GET /static/style.css with "
        f"{status} {body[:120]!r} instead of static/style.css. {FROM_THE_CODE_HINT}"
    )


@pytest.mark.task(1)
async def test_every_file_of_the_static_folder_is_served(tree, client):
    with judge_files(tree) as files:
        status, content_type, body = await fetch(client, files["sheet"])
    assert status == 200 and body == files["sheet_body"], (
        f"the judge put a new file into static/; expected GET {files['sheet']} to answer 200 with its "
        f"content, got {status} {body[:120]!r}. Hint: serve the whole folder with add_static, "
        "not only style.css."
    )
    assert content_type == "text/css", f"expected text/css, got {content_type}"


@pytest.mark.task(1)
def test_static_route_is_named_static(tree, learner, site):
    resources = learner.app_info(site)["resources"]
    named = {r.get("name"): r for r in resources if isinstance(r, dict) and r.get("name")}
    resource = named.get("static")
    assert resource is not None, (
        f"expected a route named 'static', found the names {sorted(map(str, named))}. "
        "Hint: add_static(..., name='static') lets templates ask the router for file addresses."
    )
    info = resource.get("info") if isinstance(resource.get("info"), dict) else {}
    hand_made = resource.get("kind") != "StaticResource"
    assert not hand_made and info.get("prefix") == "/static", (
        f"expected the route named 'static' to be a static route at /static/, got a {resource.get('kind')} "
        f"at {resource.get('canonical')!r}"
        + (": a view of your own serves whatever path it is asked for, unless it has every path that leads "
           "outside static/ refused (../, encoded slashes, symlinks)" if hand_made else "")
        + ". Hint: app.router.add_static('/static/', ..., name='static'), which refuses them for you."
    )
    directory = info.get("directory", "")
    assert directory and Path(directory).resolve() == static_dir(tree).resolve(), (
        f"expected the static route to serve {static_dir(tree)}, it serves {directory!r}. "
        "Hint: path=PROJECT_ROOT / 'static', found from the code, not from the current directory."
    )


@pytest.mark.task(1)
async def test_missing_static_file_is_404(site, client):
    status, _ = await raw_get(site.port, f"/static/no-such-file-{secrets.token_hex(4)}.css")
    assert status == 404, f"expected 404 for a file that static/ does not have, got {status}"
    await expect_stylesheet(client)


@pytest.mark.task(1)
async def test_the_folder_is_not_listed(site, client):
    await expect_stylesheet(client)
    status, data = await raw_get(site.port, "/static/")
    assert status in REFUSED and b"style.css" not in data, (
        f"expected GET /static/ to be refused (403 or 404), got {status}"
        + (" with a listing of the folder" if b"style.css" in data else "")
        + ". Hint: leave show_index off: a listing tells strangers every file you keep there."
    )


@pytest.mark.task(1)
@pytest.mark.parametrize("target", ESCAPES)
async def test_nothing_outside_static_is_served(site, client, target):
    await expect_stylesheet(client)
    status, data = await raw_get(site.port, target)
    leaked = [secret.decode() for secret in SECRETS if secret in data]
    assert status in REFUSED and not leaked, (
        f"expected GET {target} to be refused (400, 403 or 404), got {status}"
        + (f" with the content of a file outside static/ ({leaked[0]!r} ...)" if leaked else "")
        + f". {NO_ESCAPE_HINT}"
    )


@pytest.mark.task(1)
@pytest.mark.parametrize("kind", [0, 1], ids=["symlink-to-file", "symlink-to-folder"])
async def test_symlinks_do_not_lead_outside_static(tree, site, client, kind):
    with judge_files(tree) as files:
        control, _, _ = await fetch(client, files["sheet"])
        target = files["links"][kind]
        status, data = await raw_get(site.port, target)
    assert control == 200, (
        f"expected a file the judge put into static/ to be served, got {control} "
        "(see the second check of this task)"
    )
    leaked = files["secret_body"] in data
    assert status in REFUSED and not leaked, (
        f"the judge put a symlink into static/ that points {'at a file' if kind == 0 else 'at a folder'} "
        f"outside it; expected GET {target} to be refused (403 or 404), got {status}"
        + (" with the secret file's content" if leaked else "")
        + ". Hint: leave follow_symlinks off (the default), so that a symlink in static/ cannot make the "
        "route serve a file from elsewhere (with one, /etc/passwd is a link away)."
    )


# --- task 2: the stylesheet link -------------------------------------------------------------------------


def stylesheet_hrefs(body: str) -> list[str]:
    links = re.findall(r"<link\b[^>]*>", body)
    sheets = [link for link in links if re.search(r"rel=[\"']?stylesheet", link)]
    return [m.group(1) for link in sheets for m in [re.search(r"href=[\"']([^\"']+)", link)] if m]


def narrowing_media(body: str) -> str:
    """The media attribute of the stylesheet's <link> when it narrows the media the sheet styles ('' when
    it has none, or media="all", which is the same): "print" leaves the screen unstyled, "screen" paper."""
    for link in re.findall(r"<link\b[^>]*>", body):
        if "/static/style.css" not in link or not re.search(r"rel=[\"']?stylesheet", link):
            continue
        found = re.search(r"\bmedia=[\"']?([^\"'>]*)", link)
        if found and found.group(1).strip().lower() != "all":
            return f'media="{found.group(1)}"'
    return ""


class LinkTags(HTMLParser):
    """The <link> tags of a page as a browser reads them: what is in a comment is no tag, and each tag notes
    whether it sits inside <noscript> (not applied while scripts run, as they do in every browser)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[dict[str, str], bool]] = []
        self.noscript = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "noscript":
            self.noscript += 1
        elif tag == "link":
            self.links.append(({name: value or "" for name, value in attrs}, self.noscript > 0))

    def handle_endtag(self, tag: str) -> None:
        if tag == "noscript":
            self.noscript = max(0, self.noscript - 1)


def integrity_matches(value: str, sheet: bytes) -> bool:
    """Whether an integrity attribute names the stylesheet's own hash (one of its sha256/384/512 tokens)."""
    for token in value.split():
        algorithm, _, digest = token.partition("-")
        if algorithm in ("sha256", "sha384", "sha512"):
            if base64.b64encode(hashlib.new(algorithm, sheet).digest()).decode() == digest.split("?")[0]:
                return True
    return False


def not_applied(body: str, sheet: bytes) -> str:
    """Why a browser would not apply the page's stylesheet <link> ('' when it would)."""
    parser = LinkTags()
    parser.feed(body)
    ours = [(attrs, hidden) for attrs, hidden in parser.links if "/static/style.css" in attrs.get("href", "")]
    if not ours:
        return ("it is inside an HTML comment (<!-- ... -->, a conditional comment too), which is no tag "
                "at all")
    reasons = []
    for attrs, hidden in ours:
        if hidden:
            reasons.append("it is inside <noscript>, which browsers skip while scripts run (always, by "
                           "default)")
        elif "disabled" in attrs:
            reasons.append("it has the disabled attribute, which switches the stylesheet off")
        elif attrs.get("type", "text/css").strip().lower() not in ("", "text/css"):
            reasons.append(f'it says type="{attrs["type"]}", a type browsers do not apply as a stylesheet')
        elif "integrity" in attrs and not integrity_matches(attrs["integrity"], sheet):
            reasons.append(f'its integrity="{attrs["integrity"][:60]}" is not the hash of '
                           "/static/style.css, so the browser refuses the file")  # fmt: skip
        else:
            return ""
    return reasons[0]


PAGES = ("/", "/poll/1", "/poll/3/results")


async def links_stylesheet(client, path: str) -> bool:
    _, _, raw = await fetch(client, path)
    return "/static/style.css" in stylesheet_hrefs(raw.decode("utf-8", "replace"))


@pytest.mark.task(2)
@pytest.mark.parametrize("path", PAGES)
async def test_every_page_links_the_stylesheet(client, path):
    status, _, raw = await fetch(client, path)
    body = raw.decode("utf-8", "replace")
    assert status == 200, f"expected {path} to answer 200, got {status}: {body[:300]}"
    links = re.findall(r"<link\b[^>]*>", body)
    near = [link for link in links if "/static/style.css" in link]
    elsewhere = [href for href in stylesheet_hrefs(body) if href.startswith("/static/")]
    hint = (
        'rel="stylesheet", that word alone: "alternate stylesheet" is a sheet the browser applies only when '
        "the visitor picks it" if near
        else f"the file is style.css, right in the static folder, not {elsewhere[0]!r}: "
        "url('static', filename='style.css')" if elsewhere
        else "put the link in the <head> of base.html"
    )
    assert "/static/style.css" in stylesheet_hrefs(body), (
        f'expected {path} to link the stylesheet (<link rel="stylesheet" href="/static/style.css">), found '
        f"{links or 'no <link> at all'}. Hint: {hint}."
    )
    head = re.search(r"<head\b.*?</head>", body, re.S | re.I)
    if not (head and "/static/style.css" in stylesheet_hrefs(head.group(0))):
        # A link in one page's own template is outside <head> and styles that page only: say so.
        unlinked = [other for other in PAGES if other != path and not await links_stylesheet(client, other)]
        pytest.fail(
            f"expected the stylesheet's <link> of {path} inside <head>...</head>, it is elsewhere"
            + (f", and {' and '.join(unlinked)} have none at all" if unlinked else "")
            + ". Hint: put the link in the <head> of base.html, which every page extends.",
            pytrace=False,
        )
    media = narrowing_media(body)
    assert not media, (
        f"expected the stylesheet of {path} to style the page whatever the medium (no media attribute), its "
        f"<link> says {media}: the browser uses it for that medium only, and shows the page unstyled in the "
        "others (printed, or on screen). Hint: leave media out."
    )
    status, _, sheet = await fetch(client, "/static/style.css")
    assert status == 200, f"expected the linked stylesheet to be served, got {status}"
    why = not_applied(body, sheet)
    assert not why, (
        f"expected the stylesheet's <link> of {path} to be one a browser applies, but {why}: "
        f"{[link for link in links if '/static/style.css' in link]}. Hint: a plain "
        "<link rel=\"stylesheet\" href=\"{{ url('static', filename='style.css') }}\"> in the <head> of "
        "base.html, with nothing that switches it off."
    )


@pytest.mark.task(2)
async def test_stylesheet_address_comes_from_the_router(learner, site, pg_database):
    """The app served where only the router's addresses lead (tests/moved.py): a link written by hand, or
    pasted onto the index's address, does not follow."""
    layout = Layout()
    app = layout.serve(learner, valid_config(pg_database))
    index = layout.url("index", "/")
    async with http_session() as session:
        async with session.get(f"{app.url}{index}") as response:
            status, body = response.status, await response.text()
        expected = layout.url("static", "/static/style.css")
        assert status == 200, f"{layout.told}; expected {index} to answer 200, got {status}: {body[:300]}"
        hrefs = stylesheet_hrefs(body)
        found = ", ".join(layout.diagnose(href, "static", "/static/style.css") for href in hrefs)
        assert expected in hrefs, (
            f"{layout.told}; expected the page to link the stylesheet at {expected}, it links "
            f"{found or 'no stylesheet'}. Hint: ask the router for the static route itself in base.html, "
            "{{ url('static', filename='style.css') }}, rather than writing the address or pasting it on."
        )
        async with session.get(f"{app.url}{expected}") as response:
            assert response.status == 200, f"expected {expected} to be served, got {response.status}"

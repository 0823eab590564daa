"""The finished polls app in a real browser: a visitor's clicks, from the list of polls to the results.

The newest step of the catalogue (its reference solution, solutions/stepN) runs in its own process, as
`python -m aiohttpdemo_polls --config ...`, on a throwaway PostgreSQL loaded by the app's own init_db.
Playwright drives Debian's Chromium (/usr/bin/chromium); where it is missing the tests skip and say why.
On the way they write docs/screenshots/{index,poll,results,404}.png, which the README shows.

These tests belong to no step: run them with `nox -s browser` or `pytest tests/browser`.
"""

from __future__ import annotations

import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from psycopg2 import sql

from workbook import catalogue
from workbook.pg import NoPostgresAvailable, PostgresServer, free_port
from workbook.serve import prepared_app, stop_process

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed: run `nox -s browser`, which installs it"
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Dialog, Page, Response

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # we may run as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
VIEWPORT = {"width": 900, "height": 600}
SCREENSHOTS = catalogue.ROOT / "docs" / "screenshots"
SCREENSHOT_LIMIT = 100_000  # bytes: the README's images stay small
TIMEOUT_MS = 10_000  # a page of this app answers in milliseconds; a stuck test should say so quickly

STEP = catalogue.steps()[-1]
TREE = STEP.tree(catalogue.ROOT, "solutions")
PACKAGE_DIR = TREE / catalogue.PACKAGE
NOT_FOUND_HEADING = "Page not found"

# What a page must never show: Python's traceback, aiohttp's own error pages, a repr of an exception.
TRACEBACK_MARKERS = (
    "Traceback (most recent call last)",
    'File "',
    "Server got itself in trouble",
    "500 Internal Server Error",
    "aiohttp.web_exceptions",
    "RecordNotFound",
)


# --- the app in its own process ------------------------------------------------------------------------


@dataclass
class Site:
    """The running app: its address, its database and its log (stdout and stderr)."""

    base: str
    server: PostgresServer
    database: str
    log: Path

    def url(self, path: str) -> str:
        return self.base + path

    def sql(self, statement: str | sql.Composable) -> list[tuple]:
        return self.server.execute(statement, self.database)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def first_poll(self) -> tuple[int, str]:
        rows = self.sql("SELECT id, question_text FROM question ORDER BY id LIMIT 1")
        assert rows, "expected init_db to load sample polls, the question table is empty"
        return rows[0]

    def add_poll(self, question: str, answers: list[str]) -> int:
        """Insert a poll (as literal text, whatever it contains) and its answers; its new id."""
        insert = "INSERT INTO question (question_text, pub_date) VALUES ({}, CURRENT_DATE) RETURNING id"
        (poll_id,) = self.sql(sql.SQL(insert).format(sql.Literal(question)))[0]
        for answer in answers:
            insert = "INSERT INTO choice (question_id, choice_text) VALUES ({}, {})"
            self.sql(sql.SQL(insert).format(sql.Literal(poll_id), sql.Literal(answer)))
        return poll_id

    def choices(self, poll_id: int) -> list[tuple[int, str, int]]:
        """(id, text, votes) of every choice of a poll, in id order."""
        return self.sql(
            sql.SQL("SELECT id, choice_text, votes FROM choice WHERE question_id = {} ORDER BY id").format(
                sql.Literal(poll_id)
            )
        )


def wait_until_serving(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    """Poll `url` until it answers 200; fail with the end of the app's log if the app exits first."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-10:])
            pytest.fail(f"expected the app to keep running, it exited ({process.returncode}):\n{tail}")
        try:
            with opener.open(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    pytest.fail(f"expected the app to answer {url} within {timeout:.0f}s, it did not")


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's Chromium, or a skip that says how to get it (Playwright cannot download one here)."""
    if not CHROMIUM.is_file():
        pytest.skip(
            f"no Chromium at {CHROMIUM}: install it (`apt-get install chromium` on Debian/Ubuntu), "
            "then run `nox -s browser`, which also tries that when run as root"
        )
    return CHROMIUM


@pytest.fixture(scope="module")
def site(chromium: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """solutions/stepN served by `python -m aiohttpdemo_polls --config ...` on a throwaway PostgreSQL."""
    port = free_port()
    log = tmp_path_factory.mktemp("browser") / "app.log"
    try:
        with prepared_app(STEP, TREE, port) as prepared, log.open("wb") as log_file:
            assert prepared.server is not None and prepared.database is not None, (
                f"expected step {STEP.number} (the newest step) to use a database, its catalogue entry "
                f"says serve = {STEP.serve!r}"
            )
            process = subprocess.Popen(
                prepared.command(), cwd=TREE, env=prepared.env, stdout=log_file, stderr=subprocess.STDOUT
            )
            try:
                base = f"http://127.0.0.1:{port}"
                wait_until_serving(base + "/", process, log)
                yield Site(base, prepared.server, prepared.database, log)
            finally:
                stop_process(process)
    except NoPostgresAvailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="module")
def browser(chromium: Path) -> Iterator[Browser]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def context(browser: Browser, site: Site) -> Iterator[BrowserContext]:
    """One browser window for the module (a new one per test would cost a renderer process each time)."""
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1, base_url=site.base)
    context.set_default_timeout(TIMEOUT_MS)
    yield context
    context.close()


@dataclass
class Visit:
    """What happened in the page while one test used it."""

    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    failed_resources: list[str] = field(default_factory=list)


@pytest.fixture
def visit() -> Visit:
    return Visit()


@pytest.fixture
def page(context: BrowserContext, site: Site, visit: Visit) -> Iterator[Page]:
    """A new 900x600 tab; afterwards: no script error or dialog in it, no error in the app's log."""
    log_before = len(site.log_text())
    page = context.new_page()
    page.on("pageerror", lambda error: visit.page_errors.append(str(error)))

    def on_dialog(dialog: Dialog) -> None:
        visit.dialogs.append(dialog.message)
        dialog.dismiss()

    def on_response(response: Response) -> None:
        # Sub-resources (the stylesheet) must load; documents are checked by each test's own status.
        if response.request.resource_type != "document" and response.status >= 400:
            visit.failed_resources.append(f"{response.status} {response.url}")

    page.on("dialog", on_dialog)
    page.on("response", on_response)
    yield page
    page.close()
    assert not visit.page_errors, f"expected no script errors in the page, got {visit.page_errors}"
    assert not visit.dialogs, f"expected no script to open a dialog (injected?), got {visit.dialogs}"
    assert not visit.failed_resources, f"expected every resource to load, got {visit.failed_resources}"
    logged = site.log_text()[log_before:]
    assert "Traceback" not in logged, f"expected the app to log no error, it logged:\n{logged[-2000:]}"


# --- what the stylesheet says -----------------------------------------------------------------------------


def css_rules(css: str) -> dict[str, dict[str, str]]:
    """selector -> {property: value}, later rules winning; enough for the app's one flat stylesheet."""
    rules: dict[str, dict[str, str]] = {}
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", re.sub(r"/\*.*?\*/", "", css, flags=re.S)):
        declarations = {}
        for declaration in body.split(";"):
            name, colon, value = declaration.partition(":")
            if colon:
                declarations[name.strip()] = value.strip()
        for selector in selectors.split(","):
            rules.setdefault(" ".join(selector.split()), {}).update(declarations)
    return rules


def resolve(value: str, variables: dict[str, str]) -> str:
    """Replace var(--name) (and var(--name, fallback)) by the custom property's value, recursively."""

    def substitute(match: re.Match[str]) -> str:
        name, fallback = match.group(1), match.group(2)
        if name in variables:
            return resolve(variables[name], variables)
        assert fallback is not None, f"style.css uses var({name}) but :root does not define it"
        return resolve(fallback.strip(), variables)

    return re.sub(r"var\(\s*(--[\w-]+)\s*(?:,([^()]*))?\)", substitute, value)


# The colours the stylesheet gives the page: (selector, computed property, declarations to read it from).
STYLED = [
    ("body", "background-color", ("background-color", "background")),
    ("body", "color", ("color",)),
    ("header", "background-color", ("background-color", "background")),
]


@pytest.fixture(scope="module")
def expected_style(browser: Browser) -> dict[tuple[str, str], str]:
    """(selector, property) -> the computed value style.css asks for, as the browser writes it (rgb(...)).

    The values come from static/style.css itself (custom properties resolved), and the browser only
    normalises them (#2a6f97 -> rgb(42, 111, 151)) on a blank page that has no stylesheet.
    """
    stylesheet = PACKAGE_DIR / "static" / "style.css"
    rules = css_rules(stylesheet.read_text())
    variables = {name: value for name, value in rules.get(":root", {}).items() if name.startswith("--")}
    blank = browser.new_page()
    try:
        expected = {}
        for selector, prop, declared_as in STYLED:
            declared = next((rules[selector][d] for d in declared_as if d in rules.get(selector, {})), None)
            assert declared is not None, f"expected {stylesheet} to set {prop} for {selector}, it does not"
            value = resolve(declared, variables)
            computed = blank.evaluate(
                """value => {
                    const probe = document.createElement("div");
                    probe.style.color = value;
                    document.body.append(probe);
                    const colour = probe.style.color ? getComputedStyle(probe).color : "";
                    probe.remove();
                    return colour;
                }""",
                value,
            )
            assert computed, f"{stylesheet}: {selector} {{{prop}: {declared}}} is not a single colour"
            expected[selector, prop] = computed
        return expected
    finally:
        blank.close()


COMPUTED_STYLE = "(element, prop) => getComputedStyle(element)[prop]"


def assert_styled(page: Page, expected_style: dict[tuple[str, str], str], what: str) -> None:
    """The stylesheet is applied: the computed colours are the ones style.css sets."""
    for (selector, prop), want in expected_style.items():
        got = page.locator(selector).first.evaluate(COMPUTED_STYLE, prop)
        assert got == want, (
            f"expected {what} to show {selector} with {prop} {want} (from static/style.css), got {got}. "
            "Hint: is the stylesheet linked with url('static', filename='style.css'), and served?"
        )


# --- helpers --------------------------------------------------------------------------------------------


def assert_no_traceback(page: Page, what: str) -> None:
    html = page.content()
    for marker in TRACEBACK_MARKERS:
        assert marker not in html, f"expected {what} to show no traceback or server error, found {marker!r}"


def assert_heading(page: Page, heading: str, title: str, what: str) -> None:
    """The page's h1 and its window title, as the visitor reads them."""
    shown = page.locator("h1").inner_text()
    assert shown == heading, f"expected {what} to have the heading {heading!r}, got {shown!r}"
    assert page.title() == title, f"expected {what} to have the title {title!r}, got {page.title()!r}"


def go(page: Page, path: str, status: int = 200) -> Response:
    response = page.goto(path)
    assert response is not None, f"expected GET {path} to answer, the browser got no response"
    assert response.status == status, f"expected GET {path} to answer {status}, got {response.status}"
    assert_no_traceback(page, f"GET {path}")
    return response


def screenshot(page: Page, name: str) -> None:
    """docs/screenshots/NAME.png: what the visitor sees in the 900x600 window, not the whole page."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.mouse.move(0, 0)  # no hover effect in the picture
    page.screenshot(path=path, animations="disabled", caret="hide")
    size = path.stat().st_size
    assert size < SCREENSHOT_LIMIT, f"expected {path} under {SCREENSHOT_LIMIT:,} bytes, it has {size:,}"


# --- the tests ------------------------------------------------------------------------------------------


def test_index_lists_every_poll(site, page, expected_style):
    go(page, "/")
    questions = [text for (text,) in site.sql("SELECT question_text FROM question ORDER BY id")]
    assert_heading(page, "Polls", "Polls", "the index")
    links = page.locator("main ul.polls a").all_inner_texts()
    assert links == questions, f"expected the index to link every poll in id order, {questions}, got {links}"
    assert_styled(page, expected_style, "the index")
    screenshot(page, "index")


def test_vote_from_the_index_to_the_results(site, page, expected_style):
    poll_id, question = site.first_poll()
    go(page, "/")
    with page.expect_navigation() as navigation:
        page.get_by_role("link", name=question, exact=True).click()
    assert navigation.value is not None and navigation.value.status == 200, "expected the poll page (200)"
    assert page.url == site.url(f"/poll/{poll_id}"), f"expected the poll's link to open it, got {page.url}"
    assert_no_traceback(page, "the poll page")
    assert_heading(page, question, question, "the poll page")

    choices = site.choices(poll_id)
    labels = page.locator("form label").all_inner_texts()
    assert labels == [text for _, text, _ in choices], f"expected one labelled radio per choice, got {labels}"
    choice_id, chosen, votes_before = choices[1]
    page.get_by_label(chosen, exact=True).check()
    assert page.locator(f"#choice{choice_id}").is_checked(), f"expected {chosen!r}'s label to check its radio"
    assert_styled(page, expected_style, "the poll page")
    screenshot(page, "poll")

    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Vote").click()
    results = navigation.value
    assert results is not None and results.status == 200, "expected the vote to end on the results page"
    post = results.request.redirected_from
    assert post is not None and post.method == "POST", "expected the form to POST, then be redirected"
    redirect = post.response()
    assert redirect is not None and redirect.status == 302, "expected the vote to answer 302 Found"
    assert page.url == site.url(f"/poll/{poll_id}/results"), f"expected the results page, got {page.url}"
    assert_no_traceback(page, "the results page")
    assert_heading(page, question, f"Results: {question}", "the results page")

    after = {choice: votes for choice, _, votes in site.choices(poll_id)}
    assert after[choice_id] == votes_before + 1, (
        f"expected PostgreSQL to count the vote: {votes_before} -> {votes_before + 1}, got {after[choice_id]}"
    )
    shown = page.locator("ul.results li").all_inner_texts()
    for choice, text, votes_then in choices:
        votes = after[choice]
        assert votes == votes_then + (choice == choice_id), f"expected only {chosen!r} to gain a vote"
        line = f"{text}: {votes} vote{'' if votes == 1 else 's'}"
        assert line in shown, f"expected the results to show {line!r}, got {shown}"
    assert_styled(page, expected_style, "the results page")
    screenshot(page, "results")

    reloaded = page.reload()  # Post/Redirect/Get: a reload of the results shows them, it does not vote
    assert reloaded is not None and reloaded.status == 200, "expected the results page to reload"
    assert site.choices(poll_id) == [(c, t, after[c]) for c, t, _ in choices], "a reload must not vote"


def test_vote_without_a_choice_explains_itself(site, page):
    poll_id, _ = site.first_poll()
    before = site.choices(poll_id)
    go(page, f"/poll/{poll_id}")
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Vote").click()
    status = navigation.value.status if navigation.value else None
    assert status == 400, f"expected a vote without a choice to answer 400 Bad Request, got {status}"
    assert_no_traceback(page, "the vote without a choice")
    message = page.locator("body").inner_text().strip()
    assert "choose" in message.lower(), f"expected a message asking to choose an answer, got {message!r}"
    assert site.choices(poll_id) == before, "expected a vote without a choice to count nothing"


@pytest.mark.parametrize("path", ["/poll/999999", "/poll/999999/results", "/poll/abc", "/no/such/page"])
def test_missing_page_shows_the_custom_404(site, page, expected_style, path):
    response = go(page, path, status=404)
    assert response.headers.get("content-type", "").startswith("text/html"), (
        f"expected the 404 of {path} to be the site's HTML page, got {response.headers.get('content-type')}"
    )
    assert_heading(page, NOT_FOUND_HEADING, NOT_FOUND_HEADING, f"the 404 page of {path}")
    assert_styled(page, expected_style, f"the 404 page of {path}")
    if path == "/poll/999999":
        screenshot(page, "404")
    with page.expect_navigation():
        page.get_by_role("link", name="See all polls").click()
    assert page.url == site.url("/"), "expected the 404 page to link back to the list of polls"


def test_html_in_a_poll_shows_as_text(site, page):
    question = "<b>Bold?</b> & <i>\"quoted\"</i> 'single' &amp; <script>window.injected = 1</script>"
    answer = '<img src=x onerror="window.injected = 2"> &lt;tag&gt;'
    poll_id = site.add_poll(question, [answer])
    try:
        go(page, "/")
        markup = page.locator("main b, main i, main script, main img")
        assert markup.count() == 0, "expected the poll's text to be escaped, the browser made elements of it"
        with page.expect_navigation():
            page.get_by_role("link", name=question, exact=True).click()
        assert_heading(page, question, question, "the poll page")
        labels = page.locator("form label").all_inner_texts()
        assert labels == [answer], f"expected the answer's text as its label, got {labels}"
        assert markup.count() == 0, "expected the poll page to show its texts as text, not as elements"
        page.get_by_label(answer, exact=True).check()
        with page.expect_navigation():
            page.get_by_role("button", name="Vote").click()
        assert_no_traceback(page, "the results of the poll with HTML in it")
        assert_heading(page, question, f"Results: {question}", "the results page")
        shown = page.locator("ul.results li").all_inner_texts()
        assert shown == [f"{answer}: 1 vote"], f"expected the answer's text with its vote, got {shown}"
        assert markup.count() == 0, "expected the results to show the texts as text, not as elements"
        assert page.evaluate("window.injected") is None, "expected no script of the poll's text to run"
    finally:
        site.sql(sql.SQL("DELETE FROM question WHERE id = {}").format(sql.Literal(poll_id)))  # cascades


def test_no_page_shows_a_traceback(site, page):
    """Every page a visitor can reach, and some addresses they may type: never a 500, never a traceback."""
    expected = {"/": 200, "/static/style.css": 200, "/static/": 403}
    for (poll,) in site.sql("SELECT id FROM question ORDER BY id"):
        expected |= {f"/poll/{poll}": 200, f"/poll/{poll}/results": 200, f"/poll/{poll}/vote": 405}
    expected |= {"/poll/0": 404, "/poll/-1": 404, "/poll/9999999999": 404, "/poll/99999999999": 404}
    expected |= {"/static/..%2f__init__.py": 404, "/static/..%2fmain.py": 404, "/%00": 404}
    for path, status in expected.items():
        go(page, path, status=status)


def test_missing_static_file_shows_the_custom_404(page):
    path = "/static/missing.css"
    response = page.request.get(path)
    assert response.status == 404, f"expected GET {path} to answer 404, got {response.status}"
    content_type = response.headers.get("content-type", "")
    assert content_type.startswith("text/html"), (
        f"expected GET {path} to show the site's 404 page, got an empty {content_type} file, which the "
        "browser downloads. Hint: the error middleware must also replace a FileResponse whose file is "
        "missing."
    )
    go(page, path, status=404)
    assert_heading(page, NOT_FOUND_HEADING, NOT_FOUND_HEADING, f"the 404 page of {path}")

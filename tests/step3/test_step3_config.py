"""Step 3: configuration from YAML, validated with trafaret, found in predefined places or via --config.

The judge writes config files into tmp_path (with values that change every run) and has the learner's
`load_config` and `get_config` called in the learner's process; the app is served from `init_app(config)`,
and `python -m aiohttpdemo_polls` runs as a process of its own, judged by its exit status and output.
"""

import contextlib
import random
import re
import secrets
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import http_session, raised_text, why_it_ended
from workbook.judge.learner_process import LearnerRaised
from workbook.pg import free_port

HELLO = "Hello Aiohttp!"


def random_config(**overrides: Any) -> dict[str, Any]:
    """A valid configuration whose values change every run, so none of them can be hard-coded."""
    word = secrets.token_hex(3)
    config: dict[str, Any] = {
        "postgres": {
            "database": f"polls_{word}",
            "user": f"user_{word}",
            "password": secrets.token_urlsafe(9),
            "host": f"db-{word}.example",
            "port": random.randrange(1024, 65536),
            "minsize": 1,  # test_valid_file_loads tries 0, 1 and 2; a draw here would decide other checks
            "maxsize": random.randrange(3, 20),
        },
        "host": f"127.0.{random.randrange(256)}.{random.randrange(2, 255)}",
        "port": random.randrange(1024, 65536),
    }
    config.update(overrides)
    return config


def write_config(path: Path, data: Any) -> Path:
    """The judge writes the file (plain YAML it made itself); only its path goes to the learner."""
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def load(learner, path: Path) -> Any:
    """settings.load_config(path) in the learner's process; a raise fails the check, showing it."""
    return learner.call_or_fail("settings:load_config", str(path))


def config_error(learner, path: Path, problem: str, target: str = "settings:load_config", *args: Any) -> str:
    """target(path) (or target(*args)) must raise ConfigError, in one line; return its message.

    `problem` says what is wrong with the input, for the failure message.
    """
    shown = f"{target.replace(':', '.')}({', '.join(repr(a) for a in args) or repr(path.name)})"
    try:
        got = learner.call(target, *(args or (str(path),)))
    except LearnerRaised as exc:
        if exc.name != "ConfigError":
            escaped = exc.error.get("type", "").startswith("yaml.")  # the parser refused it, uncaught
            hint = (
                "yaml refused the file, as it should, but its error escaped: catch yaml.YAMLError and "
                "raise ConfigError naming the file"
                if escaped
                else "catch the underlying error and raise ConfigError naming the file (and the field)"
            )
            pytest.fail(
                f"{problem}: expected {shown} to raise ConfigError, it raised {raised_text(exc.error)}\n"
                f"Hint: {hint}.",
                pytrace=False,
            )
        message = exc.message.strip()
        assert "\n" not in message, (
            f"expected ConfigError's message to be one line, got {len(message.splitlines())} lines:\n"
            f"{message}\nHint: join the problems with '; ', not newlines; fold a YAML error into one line."
        )
        return message
    pytest.fail(f"{problem}: expected {shown} to raise ConfigError, it returned {got!r}", pytrace=False)


# --- task 1: load_config -------------------------------------------------------------------------------


@pytest.mark.task(1)
def test_valid_file_loads(learner, tmp_path):
    # Three files whose numbers all differ (every minsize random_config draws, 0 included): a number
    # written into the code, or a default put in place of the file's, fails with two of them at least.
    maxsizes, ports, db_ports = (random.sample(range(low, high), 3) for low, high in
                                 ((3, 20), (1024, 65536), (1024, 65536)))  # fmt: skip
    for minsize, maxsize, port, db_port in zip(range(3), maxsizes, ports, db_ports, strict=True):
        expected = random_config(port=port)
        expected["postgres"].update(minsize=minsize, maxsize=maxsize, port=db_port)
        got = load(learner, write_config(tmp_path / "polls.yaml", expected))
        assert got == expected, f"expected load_config to return the file's content {expected}, got {got}"


@pytest.mark.task(1)
def test_blank_password_loads(learner, tmp_path):
    """A local PostgreSQL without a password (as `nox -s serve` runs one) has password ''."""
    expected = random_config()
    expected["postgres"]["password"] = ""
    hint = "Hint: t.String(allow_blank=True) for the password."
    try:
        got = learner.call("settings:load_config", str(write_config(tmp_path / "no-password.yaml", expected)))
    except LearnerRaised as exc:
        pytest.fail(f"a config with postgres.password '' (a server without a password) must load, "
                    f"load_config raised {raised_text(exc.error)}\n{hint}", pytrace=False)  # fmt: skip
    assert got == expected, (
        f"expected a config with postgres.password '' (a server without a password) to load, got {got}. "
        + hint
    )


@pytest.mark.task(1)
def test_workbook_config_file_is_valid(learner, tree):
    root_config = tree.parents[1] / "config" / "polls.yaml"  # only its path: the judge never reads it
    config = load(learner, root_config)
    assert isinstance(config, dict) and config.get("port") == 8080 \
        and config.get("postgres", {}).get("port") == 5432, (
        f"expected config/polls.yaml to load with port 8080 and postgres.port 5432, got {config}"
    )  # fmt: skip


def bad_text() -> str:
    return random.choice(["eighty", "lots", "many", "some"]) + "-" + secrets.token_hex(2)


# case: (field, what is wrong, the change, the field whose refused value the error must show, or None)
INVALID = {
    "missing-host": ("host", "host is missing", lambda c: c.pop("host"), None),
    "missing-database": ("postgres.database", "postgres.database is missing",
                         lambda c: c["postgres"].pop("database"), None),
    "port-not-int": ("port", "port is not a number", lambda c: c.update(port=bad_text()), "port"),
    "port-too-big": ("port", "port is above 65535", lambda c: c.update(port=random.randrange(65536, 10**6)),
                     "port"),
    "db-port-zero": ("postgres.port", "postgres.port is 0, below 1", lambda c: c["postgres"].update(port=0),
                     "postgres.port"),
    "db-port-too-big": ("postgres.port", "postgres.port is above 65535",
                        lambda c: c["postgres"].update(port=random.randrange(65536, 10**6)), "postgres.port"),
    "maxsize-text": ("postgres.maxsize", "postgres.maxsize is not a number",
                     lambda c: c["postgres"].update(maxsize=bad_text()), "postgres.maxsize"),
    "minsize-negative": ("postgres.minsize", "postgres.minsize is below 0",
                         lambda c: c["postgres"].update(minsize=-random.randrange(1, 50)),
                         "postgres.minsize"),
    "maxsize-zero": ("postgres.maxsize", "postgres.maxsize is 0, below 1",
                     lambda c: c["postgres"].update(maxsize=0), "postgres.maxsize"),
    "host-not-ip": ("host", "host is not an IP address",
                    lambda c: c.update(host=f"not an address {secrets.token_hex(2)}"), "host"),
    "misspelt-key": ("prot", "the key prot is a misspelt port (unknown keys must be refused)",
                     lambda c: c.update(prot=random.randrange(1024, 65536)), None),
}  # fmt: skip


@pytest.mark.task(1)
@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_values_name_the_field_value_and_file(learner, tmp_path, case):
    field, problem, change, value_of = INVALID[case]
    config = random_config()
    change(config)
    value = None
    if value_of:
        section = config["postgres"] if value_of.startswith("postgres.") else config
        value = section[value_of.rpartition(".")[2]]
    name = f"broken-{secrets.token_hex(2)}.yaml"
    path = write_config(tmp_path / name, config)
    message = config_error(learner, path, problem)
    assert field in message, (
        f"expected the error to name the field {field!r}, got: {message}. "
        "Hint: name nested fields with their section, e.g. postgres.port."
    )
    assert name in message, f"expected the error to name the file {name}, got: {message}"
    if value is not None:
        # The value as a whole word, outside the file's path: the 0 of a random temp folder shows no value.
        shown = re.search(rf"(?<![\w.]){re.escape(str(value))}(?![\w.])", message.replace(str(path), ""))
        assert shown, (
            f"expected the error to show the refused value {value!r} of {field}, got: {message}. "
            "Hint: exc.as_dict(value=True) adds 'got ...' to each problem."
        )


@pytest.mark.task(1)
def test_every_problem_is_named_in_one_line(learner, tmp_path):
    config = random_config(port=random.randrange(65536, 10**6))
    config["postgres"]["port"] = -random.randrange(1, 1000)
    message = config_error(learner, write_config(tmp_path / "two-problems.yaml", config),
                           "postgres.port and port are both out of range")
    for field, value in (("postgres.port", config["postgres"]["port"]), ("port", config["port"])):
        assert field in message and str(value) in message, (
            f"two fields are wrong (postgres.port={config['postgres']['port']}, port={config['port']}): "
            f"expected the error to name both with their values, got: {message}"
        )


@pytest.mark.task(1)
@pytest.mark.parametrize(
    ("content", "what"),
    [
        ("postgres: [unclosed\nhost: 127.0.0.1\n", "malformed YAML"),
        ("", "an empty file"),
        ("just a sentence\n", "a plain string"),
    ],
)
def test_unusable_yaml_names_the_file(learner, tmp_path, content, what):
    name = f"odd-{secrets.token_hex(2)}.yaml"
    message = config_error(learner, write_config(tmp_path / name, content), f"{name} holds {what}")
    assert name in message, f"expected the error for {what} to name {name}, got: {message}"


@pytest.mark.task(1)
def test_yaml_tags_are_not_executed(learner, tmp_path):
    """yaml.safe_load refuses Python object tags; yaml.load(..., Loader=yaml.Loader) would run them."""
    marker = tmp_path / f"executed-{secrets.token_hex(4)}"
    content = f"!!python/object/apply:os.system ['touch {marker}']\n"
    message = config_error(learner, write_config(tmp_path / "evil.yaml", content),
                           "evil.yaml holds a Python tag that would run a command")
    assert not marker.exists(), (
        f"the YAML tag in evil.yaml ran a command (it created {marker.name}): use yaml.safe_load"
    )
    assert "evil.yaml" in message, f"expected the error to name evil.yaml, got: {message}"


@pytest.mark.task(1)
def test_python_tags_are_refused(learner, tmp_path):
    """Loaders other than safe_load build Python objects from tags; a config file must not contain any."""
    config = random_config()
    database = config["postgres"]["database"]
    text = yaml.safe_dump(config).replace(f"database: {database}", f"database: !!python/str {database}")
    message = config_error(learner, write_config(tmp_path / "tagged.yaml", text),
                           "postgres.database carries the Python tag !!python/str (use yaml.safe_load)")
    assert "tagged.yaml" in message, f"expected the error to name tagged.yaml, got: {message}"


@pytest.mark.task(1)
def test_binary_file_names_the_file(learner, tmp_path):
    path = tmp_path / "picture.yaml"
    path.write_bytes(bytes(range(256)))
    message = config_error(learner, path, "picture.yaml holds binary data, not UTF-8 text")
    assert "picture.yaml" in message, f"expected the error to name picture.yaml, got: {message}"


@pytest.mark.task(1)
def test_missing_file_names_the_file(learner, tmp_path):
    name = f"nowhere-{secrets.token_hex(2)}.yaml"
    message = config_error(learner, tmp_path / name, f"{name} does not exist")
    assert name in message, f"expected the error to name {name}, got: {message}"


@pytest.mark.task(1)
def test_unreadable_file_names_the_file(learner, tmp_path):
    # A directory cannot be read as a file, even by root (chmod 000 would not stop root).
    folder = tmp_path / "a-folder.yaml"
    folder.mkdir()
    message = config_error(learner, folder, "a-folder.yaml is a folder, not a file")
    assert "a-folder.yaml" in message, f"expected the error to name a-folder.yaml, got: {message}"


# --- task 2: get_config --------------------------------------------------------------------------------


def locations(learner, *paths: Path) -> None:
    learner.patch("settings:CONFIG_LOCATIONS", [str(path) for path in paths], kind="paths")


def port_of(config: Any) -> Any:
    return config.get("port") if isinstance(config, dict) else config


@pytest.mark.task(2)
def test_config_option_wins(learner, tmp_path):
    default_port, chosen_port = random.sample(range(1024, 65536), 2)
    default = write_config(tmp_path / "default.yaml", random_config(port=default_port))
    chosen = write_config(tmp_path / "chosen.yaml", random_config(port=chosen_port))
    locations(learner, default)
    got = learner.call_or_fail("settings:get_config", ["--config", str(chosen)])
    assert port_of(got) == chosen_port, (
        f"CONFIG_LOCATIONS = [default.yaml (port {default_port})], get_config(['--config', 'chosen.yaml']): "
        f"expected chosen.yaml (port {chosen_port}) to win, got port {port_of(got)}"
    )


@pytest.mark.task(2)
def test_missing_config_option_is_an_error(learner, tmp_path):
    default = write_config(tmp_path / "default.yaml", random_config())
    locations(learner, default)
    missing = tmp_path / f"typo-{secrets.token_hex(2)}.yaml"
    problem = f"the --config file {missing.name} does not exist (never fall back to the predefined locations)"
    message = config_error(learner, missing, problem, "settings:get_config", ["--config", str(missing)])
    assert missing.name in message, (
        f"get_config(['--config', '{missing.name}']) for a file that does not exist: expected ConfigError "
        f"naming {missing.name} (never a fallback to the predefined locations), got: {message}"
    )


@pytest.mark.task(2)
def test_first_existing_location_is_used(learner, tmp_path):
    ports = random.sample(range(1024, 65536), 2)
    second = write_config(tmp_path / "second.yaml", random_config(port=ports[0]))
    third = write_config(tmp_path / "third.yaml", random_config(port=ports[1]))
    locations(learner, tmp_path / "missing.yaml", second, third)
    got = learner.call_or_fail("settings:get_config", [])
    assert port_of(got) == ports[0], (
        "CONFIG_LOCATIONS = [missing.yaml, second.yaml, third.yaml]: expected the first location that "
        f"exists (second.yaml, port {ports[0]}), got port {port_of(got)}"
    )


@pytest.mark.task(2)
def test_no_location_lists_where_it_looked(learner, tmp_path):
    places = [tmp_path / f"{letter}-{secrets.token_hex(2)}.yaml" for letter in "ab"]
    locations(learner, *places)
    problem = "no file exists in CONFIG_LOCATIONS"
    message = config_error(learner, places[0], problem, "settings:get_config", [])
    assert all(place.name in message for place in places), (
        f"expected the error to list every place searched ({places[0].name}, {places[1].name}), "
        f"got: {message}"
    )
    assert "--config" in message, f"expected the error to mention --config as a way out, got: {message}"


@pytest.mark.task(2)
def test_workbook_config_is_a_predefined_location(learner, tree):
    # The learner's process runs in the step folder, where there is no polls.yaml.
    expected = load(learner, tree.parents[1] / "config" / "polls.yaml")
    got = learner.call_or_fail("settings:get_config", [])
    assert got == expected, (
        f"expected get_config([]) to find config/polls.yaml ({expected}), got {got}. "
        "Hint: CONFIG_LOCATIONS lists the workbook's config/polls.yaml."
    )


# --- task 3: the app and main() --------------------------------------------------------------------------


@pytest.mark.task(3)
async def test_init_app_keeps_config_under_app_key(learner):
    key = learner.require("settings:CONFIG_KEY")
    assert "aiohttp.helpers.AppKey" in key.get("mro", []), (
        f"expected settings.CONFIG_KEY to be a web.AppKey, got {key.get('type')}"
    )
    config = random_config()
    app = learner.serve(config)
    stored = learner.app_item(app, "settings:CONFIG_KEY")
    assert stored.get("exists") and stored.get("value") == config, (
        f"expected app[CONFIG_KEY] to hold the config passed to init_app, got "
        f"{stored.get('value') if stored.get('exists') else 'nothing under CONFIG_KEY'}. "
        "Hint: app[CONFIG_KEY] = config."
    )
    async with http_session() as session, session.get(app.url + "/") as response:
        status, body = response.status, await response.text()
    assert (status, body) == (200, HELLO), f"expected GET / to answer 200 {HELLO!r}, got {status} {body!r}"


@pytest.mark.task(3)
def test_main_reports_bad_config_in_one_line(polls_process, tmp_path):
    config = random_config(port=bad_text())
    config["postgres"]["port"] = random.randrange(65536, 10**6)
    path = write_config(tmp_path / f"bad-{secrets.token_hex(2)}.yaml", config)
    result = polls_process.run("aiohttpdemo_polls", "--config", str(path))
    sent = f"python -m aiohttpdemo_polls --config {path.name}"
    if "Traceback" in result.output:
        pytest.fail(f"{sent}: expected one clear message, got a traceback ({why_it_ended(result.output)}). "
                    "Hint: catch ConfigError in main() and print it.", pytrace=False)  # fmt: skip
    assert result.status == 2, (
        f"{sent}: expected exit status 2 for a bad config, got {result.status}; it printed:\n"
        f"{result.output.strip()[-1000:]}\nHint: sys.exit(2) after printing the message."
    )
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, (
        f"{sent}: expected one readable line, got {len(lines)}:\n{result.output.strip()[-1500:]}"
    )
    for field, value in (("postgres.port", config["postgres"]["port"]), ("port", config["port"])):
        assert field in lines[0] and str(value) in lines[0], (
            f"{sent}: expected the message to name {path.name} and each refused field with its value "
            f"(postgres.port={config['postgres']['port']}, port={config['port']}), got: {lines[0]}"
        )
    assert path.name in lines[0], f"{sent}: expected the message to name {path.name}, got: {lines[0]}"


# Runs in the learner's process: stdout goes to /dev/null first, so what remains was written to stderr.
ONLY_STDERR = """
import os, runpy, sys
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
sys.argv = ["aiohttpdemo_polls", "--config", {path!r}]
runpy.run_module("aiohttpdemo_polls", run_name="__main__", alter_sys=True)
"""


@pytest.mark.task(3)
def test_main_reports_on_stderr(polls_process, tmp_path):
    missing = tmp_path / f"nowhere-{secrets.token_hex(2)}.yaml"
    result = polls_process.start_python(ONLY_STDERR.format(path=str(missing))).wait(30)
    sent = f"python -m aiohttpdemo_polls --config {missing.name} (a file that does not exist)"
    assert result.status == 2, (
        f"{sent}: expected exit status 2, got {result.status}: {why_it_ended(result.output)}"
    )
    assert missing.name in result.output, (
        f"{sent}: expected a message naming {missing.name} on stderr, stderr had: "
        f"{result.output.strip()[-500:] or 'nothing'}. Hint: print(..., file=sys.stderr)."
    )


def answers(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


@pytest.mark.task(3)
async def test_main_serves_on_configured_host_and_port(polls_process, tmp_path):
    config = random_config(port=free_port())
    host, port = config["host"], config["port"]  # a loopback address other than 127.0.0.1
    path = write_config(tmp_path / "polls.yaml", config)
    server = polls_process.start("aiohttpdemo_polls", "--config", str(path))
    try:
        polls_process.wait_for_port(server, port, timeout=10, host=host)
    except pytest.fail.Exception as exc:
        where = server.returncode is None or "address" in str(exc)  # running elsewhere, or a bind failed
        hint = " Hint: serve on config['host'] and config['port'], not fixed values." if where else ""
        pytest.fail(f"python -m aiohttpdemo_polls --config polls.yaml (host: {host}, port: {port}): {exc}."
                    + hint, pytrace=False)  # fmt: skip
    async with http_session() as session, session.get(f"http://{host}:{port}/") as response:
        status, body = response.status, await response.text()
    assert (status, body) == (200, HELLO), (
        f"expected the app on {host}:{port} (from the config) to answer 200 {HELLO!r}, got {status} {body!r}"
    )
    assert not answers("127.0.0.1", port), (
        f"the config says host {host}, but the app also answers on 127.0.0.1:{port}: it listens on every "
        "interface. Hint: web.run_app(app, host=config['host'], port=config['port'])."
    )

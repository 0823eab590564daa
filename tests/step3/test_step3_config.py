"""Step 3: configuration from YAML, validated with trafaret, found in predefined places or via --config.

The judge writes config files into tmp_path (with values that change every run) and has the learner's
`load_config` and `get_config` called in the learner's process; the app is served from `init_app(config)`,
and `python -m aiohttpdemo_polls` runs as a process of its own, judged by its exit status and output.
"""

import contextlib
import itertools
import json
import random
import re
import secrets
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import http_session, main_with_port_taken, raised_text, why_it_ended
from workbook.judge.learner_process import Command, LearnerRaised
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


def write_config(path: Path, data: Any, encoding: str = "utf-8") -> Path:
    """The judge writes the file (plain YAML it made itself); only its path goes to the learner.

    Non-ASCII text is written as it is (allow_unicode), not escaped, so the file's encoding matters.
    """
    text = data if isinstance(data, str) else yaml.safe_dump(data, allow_unicode=True)
    path.write_text(text, encoding=encoding)
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
        sent = f"a file with postgres.minsize {minsize}, postgres.maxsize {maxsize}, port {port}"
        try:
            got = learner.call("settings:load_config", str(write_config(tmp_path / "polls.yaml", expected)))
        except LearnerRaised as exc:
            pytest.fail(f"{sent} (every value the lesson allows) must load, load_config raised "
                        f"{raised_text(exc.error)}", pytrace=False)  # fmt: skip
        assert got == expected, f"{sent}: expected load_config to return the file's content {expected}, " \
                                f"got {got}"


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


def ipv6_host(config: dict[str, Any]) -> None:
    config["host"] = f"fd00::{secrets.token_hex(2)}"


def edge_ports(port: int):
    def change(config: dict[str, Any]) -> None:
        config["port"] = config["postgres"]["port"] = port
    return change


def smallest_pool(config: dict[str, Any]) -> None:
    config["postgres"].update(minsize=0, maxsize=1)


def non_ascii_text(config: dict[str, Any]) -> None:
    word = secrets.token_hex(2)
    config["postgres"].update(database=f"sondage_été_{word}", password=f"mot-dé-passe-ü-{word}")


# Every class of value the lesson accepts, at its edge. case: (what the file holds, the change, the hint)
ACCEPTED = {
    "ipv6-host": ("the app's host is an IPv6 address (the lesson asks for an IP address, IPv4 or IPv6)",
                  ipv6_host, "t.IP takes IPv4 and IPv6 addresses; t.IPv4 refuses every IPv6 one"),
    "highest-ports": ("port and postgres.port are 65535, the highest port", edge_ports(65535),
                      "a port is between 1 and 65535, both included: t.Int(gte=1, lte=65535)"),
    "lowest-ports": ("port and postgres.port are 1, the lowest port", edge_ports(1),
                     "a port is between 1 and 65535, both included: t.Int(gte=1, lte=65535)"),
    "smallest-pool": ("postgres.minsize 0 and postgres.maxsize 1, the smallest pool the lesson allows",
                      smallest_pool, "minsize is 0 or more (gte=0), maxsize 1 or more (gte=1)"),
    "utf8-text": ("postgres.database and postgres.password hold UTF-8 text with accents (é, ü)",
                  non_ascii_text, "open the file with encoding='utf-8', whatever the machine's default is"),
}  # fmt: skip


@pytest.mark.task(1)
@pytest.mark.parametrize("case", list(ACCEPTED))
def test_every_class_of_valid_value_loads(learner, tmp_path, case):
    what, change, hint = ACCEPTED[case]
    expected = random_config()
    change(expected)
    path = write_config(tmp_path / f"edge-{secrets.token_hex(2)}.yaml", expected)
    try:
        got = learner.call("settings:load_config", str(path))
    except LearnerRaised as exc:
        pytest.fail(f"{what}: expected load_config to accept it and return the file's content, it raised "
                    f"{raised_text(exc.error)}\nHint: {hint}.", pytrace=False)  # fmt: skip
    assert got == expected, f"{what}: expected load_config to return {expected}, got {got}\nHint: {hint}."


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
    "port-zero": ("port", "port is 0, below 1", lambda c: c.update(port=0), "port"),
    "port-too-big": ("port", "port is above 65535", lambda c: c.update(port=random.randrange(65536, 10**6)),
                     "port"),
    "db-port-too-big": ("postgres.port", "postgres.port is above 65535",
                        lambda c: c["postgres"].update(port=random.randrange(65536, 10**6)), "postgres.port"),
    "db-port-zero": ("postgres.port", "postgres.port is 0, below 1", lambda c: c["postgres"].update(port=0),
                     "postgres.port"),
    "port-65536": ("port", "port is 65536, one above the highest port", lambda c: c.update(port=65536),
                   "port"),
    "db-port-65536": ("postgres.port", "postgres.port is 65536, one above the highest port",
                      lambda c: c["postgres"].update(port=65536), "postgres.port"),
    "maxsize-text": ("postgres.maxsize", "postgres.maxsize is not a number",
                     lambda c: c["postgres"].update(maxsize=bad_text()), "postgres.maxsize"),
    "minsize-negative": ("postgres.minsize", "postgres.minsize is below 0",
                         lambda c: c["postgres"].update(minsize=-random.randrange(1, 50)),
                         "postgres.minsize"),
    "maxsize-zero": ("postgres.maxsize", "postgres.maxsize is 0, below 1",
                     lambda c: c["postgres"].update(maxsize=0), "postgres.maxsize"),
    "host-not-ip": ("host", "host is not an IP address",
                    lambda c: c.update(host=f"not an address {secrets.token_hex(2)}"), "host"),
    "host-binary": ("host", "host is YAML `!!binary`, bytes rather than text (t.IP alone raises TypeError on "
                    "bytes: check t.String() first, t.String() & t.IP)",
                    lambda c: c.update(host=secrets.token_bytes(4)), None),
    "misspelt-key": ("prot", "the key prot is a misspelt port (unknown keys must be refused)",
                     lambda c: c.update(prot=random.randrange(1024, 65536)), None),
    "misspelt-postgres-key": ("postgres.pasword", "the key postgres.pasword is a misspelt password (unknown "
                              "keys must be refused, in the postgres section too)",
                              lambda c: c["postgres"].update(pasword=secrets.token_hex(4)), None),
    "blank-database": ("postgres.database", "postgres.database is blank (only the password may be empty)",
                       lambda c: c["postgres"].update(database=""), None),
    "blank-user": ("postgres.user", "postgres.user is blank (only the password may be empty)",
                   lambda c: c["postgres"].update(user=""), None),
    "null-password": ("postgres.password", "postgres.password is null (`password:` with nothing after it): "
                      "text that may be empty is '', never null",
                      lambda c: c["postgres"].update(password=None), None),
    "blank-db-host": ("postgres.host", "postgres.host is blank (only the password may be empty)",
                      lambda c: c["postgres"].update(host=""), None),
    "host-name": ("host", "host is the name localhost, not an IP address",
                  lambda c: c.update(host="localhost"), "host"),
    "password-number": ("postgres.password", "postgres.password is the YAML number 1234..., not text (a "
                        "number is refused, not turned into text: 0123 would be read as the octal 83)",
                        lambda c: c["postgres"].update(password=random.randrange(1000, 10**6)),
                        "postgres.password"),
    "postgres-sslmode": ("postgres.sslmode", "the key postgres.sslmode is not in the schema (no other keys, "
                         "optional ones neither)",
                         lambda c: c["postgres"].update(sslmode="require"), None),
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


REQUIRED = ["postgres", *(f"postgres.{key}" for key in random_config()["postgres"]), "host", "port"]


@pytest.mark.task(1)
def test_every_key_is_required(learner, tmp_path):
    for field in REQUIRED:
        config = random_config()
        section, _, key = field.rpartition(".")
        (config[section] if section else config).pop(key)
        name = f"incomplete-{secrets.token_hex(2)}.yaml"
        problem = f"{field} is missing from {name} (every key is required: give none of them a default)"
        message = config_error(learner, write_config(tmp_path / name, config), problem)
        assert field in message and name in message, (
            f"{problem}: expected the error to name the field {field!r} and the file, got: {message}"
        )


@pytest.mark.task(1)
def test_no_value_may_be_null(learner, tmp_path):
    for field in REQUIRED:
        config = random_config()
        section, _, key = field.rpartition(".")
        (config[section] if section else config)[key] = None
        name = f"null-{secrets.token_hex(2)}.yaml"
        problem = (f"{field} is null in {name} (`{key}:` with nothing after it; no value may be null, not "
                   "even the password, which may only be the empty text '')")
        message = config_error(learner, write_config(tmp_path / name, config), problem)
        assert field in message and name in message, (
            f"{problem}: expected the error to name the field {field!r} and the file, got: {message}"
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
    ends = sorted((message.rindex(str(value)), len(str(value))) for value in (config["postgres"]["port"],
                                                                             config["port"]))  # fmt: skip
    between = message[ends[0][0] + ends[0][1] : ends[1][0]]
    assert "; " in between, (
        f"two fields are wrong (postgres.port={config['postgres']['port']}, port={config['port']}): expected "
        f"their problems apart, joined with '; ', got: {message}\nHint: '; '.join(...) of the problems."
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


# encoding: (its name in the file's name, what the file is). Latin-1 writes 'é' as the byte 0xE9, which is
# not UTF-8; UTF-16 starts with a byte-order mark, from which yaml.safe_load(bytes) would guess the encoding.
OTHER_ENCODINGS = {
    "latin-1": ("latin-1", "Latin-1 text"),
    "utf-16": ("utf-16", "UTF-16 text with a byte-order mark (yaml.safe_load given the raw bytes, "
               "path.read_bytes(), guesses the encoding from that mark and loads it)"),
}  # fmt: skip


@pytest.mark.task(1)
def test_file_in_another_encoding_is_refused(learner, tmp_path):
    """The same YAML saved in encodings other than UTF-8: each must be refused, not guessed."""
    for encoding, (label, what) in OTHER_ENCODINGS.items():
        config = random_config()
        non_ascii_text(config)
        name = f"{label}-{secrets.token_hex(2)}.yaml"
        path = write_config(tmp_path / name, config, encoding=encoding)
        problem = f"{name} is {what}, not UTF-8 (open the file with encoding='utf-8')"
        message = config_error(learner, path, problem)
        assert name in message, f"{problem}: expected the error to name {name}, got: {message}"


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


def parser_marks(text: str) -> list[str]:
    """Where PyYAML stops on the judge's own malformed text: 'line N, column M' of each mark it reports."""
    try:
        yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        marks = (exc.context_mark, exc.problem_mark)
        return [f"line {mark.line + 1}, column {mark.column + 1}" for mark in marks if mark is not None]
    raise AssertionError("the judge's malformed YAML loaded")


def parser_problem(text: str) -> str:
    """What PyYAML says is wrong with the judge's own malformed text ("expected ',' or ']', but got ':'")."""
    try:
        yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        return exc.problem or ""
    raise AssertionError("the judge's malformed YAML loaded")


@pytest.mark.task(1)
def test_malformed_yaml_says_where(learner, tmp_path):
    keys = [f"key_{secrets.token_hex(2)}: {random.randrange(100)}" for _ in range(random.randrange(1, 6))]
    text = "\n".join([*keys, "postgres: [unclosed", "host: 127.0.0.1", ""])
    marks = parser_marks(text)
    said = " ".join(parser_problem(text).split())
    name = f"malformed-{secrets.token_hex(2)}.yaml"
    problem = f"{name} holds malformed YAML (an unclosed '[' on line {len(keys) + 1})"
    message = config_error(learner, write_config(tmp_path / name, text), problem)
    assert any(mark in message for mark in marks), (
        f"{problem}: expected the error to say, as yaml's own message does, where the parser stopped "
        f"({' or '.join(marks)}), got: {message}\nHint: keep the parser's own message, folded into one "
        "line, ' '.join(str(exc).split()); catch it after OSError and UnicodeDecodeError, which say other "
        "things."
    )
    assert said in message, (
        f"{problem}: expected the error to keep what the parser says went wrong ({said!r}), not only where, "
        f"got: {message}\nHint: ' '.join(str(exc).split()) keeps the whole message, problem and position."
    )


@pytest.mark.task(1)
def test_value_yaml_cannot_build_is_a_config_error(learner, tmp_path):
    """Well-formed YAML whose value safe_load cannot build: a date that does not exist raises ValueError."""
    config = random_config()
    config["postgres"]["password"] = "SET-BELOW"  # plain text that safe_dump writes unquoted
    day = f"20{random.randrange(10, 40)}-02-{random.randrange(30, 32)}"
    text = yaml.safe_dump(config).replace("password: SET-BELOW", f"password: {day}")
    name = f"no-such-day-{secrets.token_hex(2)}.yaml"
    problem = (f"{name} sets postgres.password to {day}, which YAML reads as a date that does not exist "
               "(yaml.safe_load raises ValueError, not yaml.YAMLError)")  # fmt: skip
    message = config_error(learner, write_config(tmp_path / name, text), problem)
    assert name in message, f"{problem}: expected the error to name {name}, got: {message}"


@pytest.mark.task(1)
def test_too_deep_yaml_is_a_config_error(learner, tmp_path):
    """Well-formed YAML nested deeper than Python's recursion limit: safe_load raises RecursionError."""
    name = f"too-deep-{secrets.token_hex(2)}.yaml"
    problem = (f"{name} holds lists nested 3000 deep (yaml.safe_load raises RecursionError, neither "
               "yaml.YAMLError nor ValueError)")  # fmt: skip
    message = config_error(learner, write_config(tmp_path / name, "[" * 3000 + "]" * 3000), problem)
    assert name in message, f"{problem}: expected the error to name {name}, got: {message}"


# Runs in a fresh interpreter whose locale is C (ASCII) with Python's UTF-8 mode off, as on a machine whose
# default encoding is not UTF-8 (Windows' is cp1252): open() without encoding= reads in that default.
LOAD_IN_ASCII_LOCALE = """
import json
from aiohttpdemo_polls.settings import load_config
try:
    print("LOADED " + json.dumps(load_config({path!r})))
except Exception as exc:
    print("RAISED " + json.dumps(type(exc).__name__ + ": " + str(exc)))
"""


@pytest.mark.task(1)
def test_utf8_file_loads_whatever_the_default_encoding(polls_process, tmp_path):
    expected = random_config()
    non_ascii_text(expected)
    path = write_config(tmp_path / f"accents-{secrets.token_hex(2)}.yaml", expected)
    code = LOAD_IN_ASCII_LOCALE.format(path=str(path))
    env = {"LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    command = Command(polls_process.tree, "-X", "utf8=0", "-c", code, env=env)  # a fresh interpreter
    polls_process.commands.append(command)
    result = command.wait(30)
    sent = (f"load_config({path.name!r}), a UTF-8 file with accents in postgres.database and password, "
            "called on a machine whose default encoding is ASCII (LC_ALL=C, UTF-8 mode off)")  # fmt: skip
    lines = [line for line in result.output.splitlines() if line.startswith(("LOADED ", "RAISED "))]
    got: Any = None
    with contextlib.suppress(ValueError, RecursionError):
        got = json.loads(lines[-1].partition(" ")[2][:10000]) if lines else None
    if not lines:
        came = f"but {result.ended}: {why_it_ended(result.output)}"
    else:
        came = f"it {'returned' if lines[-1].startswith('LOADED ') else 'raised'} {got}"
    assert lines and lines[-1].startswith("LOADED ") and got == expected, (
        f"{sent}: expected the file's content {expected}, {came}\nHint: open the file with "
        "encoding='utf-8': without it, open() reads in the machine's default encoding."
    )


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
        f"expected chosen.yaml (port {chosen_port}) to win, got port {port_of(got)}. Hint: parse the argv "
        "get_config was given (parser.parse_args(argv), never sys.argv) and load its --config file before "
        "looking at CONFIG_LOCATIONS."
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
    # Four places as in the lesson, the first two missing: every one of them is searched, in order.
    ports = random.sample(range(1024, 65536), 2)
    third = write_config(tmp_path / "third.yaml", random_config(port=ports[0]))
    fourth = write_config(tmp_path / "fourth.yaml", random_config(port=ports[1]))
    locations(learner, tmp_path / "missing.yaml", tmp_path / "absent.yaml", third, fourth)
    sent = "CONFIG_LOCATIONS = [missing.yaml, absent.yaml, third.yaml, fourth.yaml], get_config([])"
    hint = "Hint: loop over the whole of CONFIG_LOCATIONS, in order, and load the first that is a file."
    try:
        got = learner.call("settings:get_config", [])
    except LearnerRaised as exc:
        pytest.fail(f"{sent}: expected the first location that exists (third.yaml, port {ports[0]}), it "
                    f"raised {raised_text(exc.error)}\n{hint}", pytrace=False)  # fmt: skip
    assert port_of(got) == ports[0], (
        f"{sent}: expected the first location that exists (third.yaml, port {ports[0]}), got port "
        f"{port_of(got)}\n{hint}"
    )


@pytest.mark.task(2)
def test_broken_first_location_is_an_error(learner, tmp_path):
    broken = write_config(tmp_path / f"broken-{secrets.token_hex(2)}.yaml", "postgres: [unclosed\n")
    good = write_config(tmp_path / "good.yaml", random_config())
    locations(learner, broken, good)
    problem = (f"CONFIG_LOCATIONS = [{broken.name} (malformed YAML), good.yaml], get_config([]): the first "
               "location exists, so it is the one to load, and it is broken (let its ConfigError through; "
               "never skip to the next file)")
    message = config_error(learner, broken, problem, "settings:get_config", [])
    assert broken.name in message, (
        f"{problem}: expected ConfigError naming {broken.name}, got: {message}\nHint: load the first "
        "location that exists and let its ConfigError through; never skip to the next file."
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
    assert all(str(place) in message for place in places), (
        f"{problem}: expected every place searched as its whole path ({places[0]}, {places[1]}), got: "
        f"{message}\nHint: str(location), not location.name: the name alone does not say which folder "
        "was searched."
    )
    assert "--config" in message, f"expected the error to mention --config as a way out, got: {message}"
    after = message[message.index(places[0].name) + len(places[0].name) :][:1]
    assert not (after.isalnum() or after in "/\\._-~"), (
        f"{problem} ({places[0]}, {places[1]}): expected each place named apart, got them run together: "
        f"{message}\nHint: ', '.join(str(location) for location in CONFIG_LOCATIONS)."
    )
    assert message[message.index(places[0].name) + len(places[0].name) :].startswith(", "), (
        f"{problem} ({places[0]}, {places[1]}): expected the places separated by ', ' as the lesson says, "
        f"got: {message}\nHint: ', '.join(str(location) for location in CONFIG_LOCATIONS)."
    )


# Runs in the learner's process: get_config alone (task 2), so main() (task 3) plays no part. argparse's
# own refusal is a SystemExit, which goes through and ends the process with its usage message.
GET_CONFIG = """
import sys
sys.argv = ["aiohttpdemo_polls"]
from aiohttpdemo_polls.settings import get_config
try:
    get_config({argv!r})
except Exception as exc:
    print("RAISED", type(exc).__name__, exc)
"""


# get_config(argv) in a process whose own command line and current directory the judge chose.
GET_CONFIG_IN = """
import os, sys
from pathlib import Path
sys.argv = ["aiohttpdemo_polls", *{sys_argv!r}]
from aiohttpdemo_polls import settings
settings.CONFIG_LOCATIONS = [Path(p) for p in {locations!r}]
os.chdir({cwd!r})
try:
    print("PORT", settings.get_config({argv!r})["port"])
except Exception as exc:
    print("RAISED", type(exc).__name__, exc)
"""


@pytest.mark.task(2)
def test_empty_argv_is_not_sys_argv(polls_process, tmp_path):
    ports = random.sample(range(1024, 65536), 2)
    default = write_config(tmp_path / "default.yaml", random_config(port=ports[0]))
    other = write_config(tmp_path / "from-sys-argv.yaml", random_config(port=ports[1]))
    code = GET_CONFIG_IN.format(sys_argv=["--config", str(other)], locations=[str(default)], argv=[],
                                cwd=str(tmp_path))  # fmt: skip
    result = polls_process.start_python(code).wait(30)
    assert f"PORT {ports[0]}" in result.output, (
        f"sys.argv = [..., '--config', 'from-sys-argv.yaml' (port {ports[1]})], CONFIG_LOCATIONS = "
        f"[default.yaml (port {ports[0]})], get_config([]): expected default.yaml (port {ports[0]}), but "
        f"{result.ended}: {why_it_ended(result.output)}\nHint: parse_args(argv): an empty list means no "
        "options; `argv or None` makes argparse read sys.argv instead."
    )


@pytest.mark.task(2)
def test_relative_config_is_read_from_the_current_directory(polls_process, tmp_path):
    port = random.randrange(1024, 65536)
    name = f"mine-{secrets.token_hex(2)}.yaml"
    write_config(tmp_path / name, random_config(port=port))
    code = GET_CONFIG_IN.format(sys_argv=[], locations=[], argv=["--config", name], cwd=str(tmp_path))
    result = polls_process.start_python(code).wait(30)
    assert f"PORT {port}" in result.output, (
        f"get_config(['--config', '{name}']) run in the folder holding {name} (port {port}): expected that "
        f"file, but {result.ended}: {why_it_ended(result.output)}\nHint: load the --config path as it "
        "is: a relative path is relative to the current directory, never to the workbook's folders."
    )
    # config/polls.yaml exists under the workbook's folder, not in tmp_path: it must not be found there.
    code = GET_CONFIG_IN.format(sys_argv=[], locations=[], argv=["--config", "config/polls.yaml"],
                                cwd=str(tmp_path))  # fmt: skip
    result = polls_process.start_python(code).wait(30)
    assert "RAISED ConfigError" in result.output and "polls.yaml" in result.output, (
        "get_config(['--config', 'config/polls.yaml']) run in a folder with no config/ in it: expected a "
        f"ConfigError naming config/polls.yaml (it is not in the current directory), but {result.ended}: "
        f"{why_it_ended(result.output)}\nHint: load the --config path as it is, with no second place to "
        "look: a relative path is relative to the current directory, never to the workbook's folders."
    )


@pytest.mark.task(2)
def test_short_config_option(polls_process, tmp_path):
    missing = tmp_path / f"short-{secrets.token_hex(2)}.yaml"
    result = polls_process.start_python(GET_CONFIG.format(argv=["-c", str(missing)])).wait(30)
    sent = f"get_config(['-c', '{missing.name}']) (a file that does not exist)"
    assert "RAISED ConfigError" in result.output and missing.name in result.output, (
        f"{sent}: expected -c to work as --config (a ConfigError naming {missing.name}), but "
        f"{result.ended}: {why_it_ended(result.output)}\nHint: parser.add_argument('-c', '--config', ...)."
    )


@pytest.mark.task(2)
def test_unknown_option_is_refused(polls_process, tmp_path):
    # The workbook's config/polls.yaml is a predefined location: code that skips the typo loads it quietly.
    chosen = write_config(tmp_path / "chosen.yaml", random_config())
    typo = "--confg"  # not an abbreviation of --config, which argparse would accept
    result = polls_process.start_python(GET_CONFIG.format(argv=[typo, str(chosen)])).wait(30)
    sent = f"get_config([{typo!r}, 'chosen.yaml']) (--config mistyped)"
    raised = next((line for line in result.output.splitlines() if line.startswith("RAISED ")), "")
    if raised:
        pytest.fail(f"{sent}: expected argparse's own refusal (its usage message, then SystemExit with "
                    f"status 2), but get_config raised{raised[len('RAISED') :]}\nHint: let the SystemExit "
                    "that parse_args raises go through (no try/except around it): argparse has already "
                    "printed what is wrong, and --help exits the same way, with status 0.",
                    pytrace=False)  # fmt: skip
    assert result.status == 2 and "unrecognized arguments" in result.output, (
        f"{sent}: expected argparse to refuse the unknown option (exit status 2, 'unrecognized "
        f"arguments: {typo} ...'), but {result.ended}: {why_it_ended(result.output)}\nHint: "
        "parser.parse_args(argv), not parse_known_args: an option the program does not know is a typo to "
        "report, never one to skip (the app would quietly run with another file)."
    )


@pytest.mark.task(2)
def test_config_without_a_path_is_refused(polls_process):
    result = polls_process.start_python(GET_CONFIG.format(argv=["--config"])).wait(30)
    sent = "get_config(['--config']) (the option with no path after it)"
    assert result.status == 2 and "expected one argument" in result.output, (
        f"{sent}: expected argparse to refuse it (exit status 2, 'argument -c/--config: expected one "
        f"argument'), but {result.ended}: {why_it_ended(result.output)}\nHint: add_argument('-c', "
        "'--config', ...) with no nargs: nargs='?' lets a bare --config quietly load a predefined location."
    )


def help_parts(text: str) -> tuple[str, str, str]:
    """argparse's --help as (usage line, description, the help text of --config): '' for a part not there."""
    lines = text.strip().splitlines()
    usage = lines[0] if lines else ""
    heading = next((i for i, line in enumerate(lines) if line.rstrip().endswith("arguments:")
                    or line.rstrip() == "options:"), len(lines))  # fmt: skip
    description = " ".join(line.strip() for line in lines[1:heading] if not line.startswith(" " * 6)).strip()
    help_text = ""
    for i, line in enumerate(lines[heading:], heading):
        if "--config" in line:  # its help: after two spaces on that line, then on the more indented lines
            rest = [line.strip().split("  ", 1)[1] if "  " in line.strip() else ""]
            rest += itertools.takewhile(lambda more: more.startswith(" " * 6), lines[i + 1 :])
            help_text = " ".join(part.strip() for part in rest).strip()
    return usage, description, help_text


@pytest.mark.task(2)
def test_help_says_how_to_run_it(polls_process):
    result = polls_process.start_python(GET_CONFIG.format(argv=["--help"])).wait(30)
    sent = "get_config(['--help']), as `python -m aiohttpdemo_polls --help` calls it"
    usage, description, help_text = help_parts(result.output)
    assert result.status == 0 and usage.startswith("usage: python -m aiohttpdemo_polls "), (
        f"{sent}: expected exit status 0 and a usage line 'usage: python -m aiohttpdemo_polls ...', but "
        f"{result.ended} with: {usage or why_it_ended(result.output)}\nHint: "
        "argparse.ArgumentParser(prog='python -m aiohttpdemo_polls', ...): without prog= argparse shows "
        "the script's file name (__main__.py under python -m)."
    )
    assert description and help_text, (
        f"{sent}: expected a sentence saying what the program does and a help text for --config, got "
        f"{'no description' if not description else 'no help for --config'}:\n{result.output.strip()[-800:]}"
        "\nHint: ArgumentParser(..., description='...') and add_argument(..., help='...')."
    )


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
        f"{sent}: expected exit status 2 for a bad config, but {result.ended}; it printed:\n"
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
        f"{sent}: expected exit status 2, but {result.ended}: {why_it_ended(result.output)}"
        + ("\nHint: sys.exit(2) once the message is printed: main() must not go on to serve."
           if result.timed_out else "")
    )
    assert missing.name in result.output, (
        f"{sent}: expected a message naming {missing.name} on stderr, stderr had: "
        f"{result.output.strip()[-500:] or 'nothing'}. Hint: print(..., file=sys.stderr)."
    )


# Runs in the learner's process: sys.argv names another missing file, so the message shows which argv
# main() parsed.
MAIN_WITH_ARGV = """
import sys
sys.argv = ["aiohttpdemo_polls", "--config", {decoy!r}]
from aiohttpdemo_polls.main import main
main(["--config", {path!r}])
"""


@pytest.mark.task(3)
def test_main_parses_the_argv_it_is_given(polls_process, tmp_path):
    word = secrets.token_hex(2)
    given, decoy = tmp_path / f"given-{word}.yaml", tmp_path / f"from-sys-argv-{word}.yaml"
    result = polls_process.start_python(MAIN_WITH_ARGV.format(decoy=str(decoy), path=str(given))).wait(30)
    sent = (f"main(['--config', '{given.name}']) (a file that does not exist) while sys.argv names "
            f"{decoy.name}")  # fmt: skip
    if decoy.name in result.output:
        pytest.fail(f"{sent}: expected the message to name {given.name}, the file main() was given; it named "
                    f"{decoy.name}: {why_it_ended(result.output)}\nHint: main() parsed sys.argv, not its "
                    "own argv: pass it on, get_config(argv).", pytrace=False)  # fmt: skip
    assert result.status == 2 and given.name in result.output, (
        f"{sent}: expected exit status 2 and a message naming {given.name}, but {result.ended}: "
        f"{why_it_ended(result.output)}"
    )


# Runs in the learner's process: get_config, wherever main() takes it from, raises an error that is not about
# the configuration (as a bug in settings.py would): an OSError, which a main() catching Exception or OSError
# would both report as a bad file.
MAIN_WITH_A_BUG = """
from aiohttpdemo_polls import main as module, settings
def get_config(argv=None):
    raise PermissionError({marker!r})
module.get_config = settings.get_config = get_config
module.main(["--config", "polls.yaml"])
"""


@pytest.mark.task(3)
def test_main_reports_only_configuration_errors(polls_process):
    marker = f"a bug, not a bad configuration {secrets.token_hex(3)}"
    result = polls_process.start_python(MAIN_WITH_A_BUG.format(marker=marker)).wait(30)
    sent = (f"main() with get_config replaced by one that raises PermissionError({marker!r}) (an OSError, as "
            "a bug in settings.py could raise)")
    assert "Traceback" in result.output and marker in result.output and result.status not in (0, 2), (
        f"{sent}: expected the error to end the program with its traceback (it is a bug to fix, not a bad "
        f"file), but {result.ended}: {why_it_ended(result.output)}\nHint: catch ConfigError only, not "
        "Exception nor OSError (load_config already turns a file it cannot read into ConfigError): a broader "
        "except reports every bug in your code as a bad configuration and hides where it happened."
    )


MAIN_PORT_TAKEN = """
from pathlib import Path
sys.argv = ["aiohttpdemo_polls", "--config", {decoy!r}]
from aiohttpdemo_polls import settings
settings.CONFIG_LOCATIONS = [Path({path!r})]
from aiohttpdemo_polls.main import main
"""


@pytest.mark.task(3)
def test_main_lets_a_taken_port_end_it(polls_process, tmp_path):
    config = random_config()
    path = write_config(tmp_path / "polls.yaml", config)
    decoy = tmp_path / f"from-sys-argv-{secrets.token_hex(2)}.yaml"  # does not exist
    setup = MAIN_PORT_TAKEN.format(decoy=str(decoy), path=str(path))
    seen, output = main_with_port_taken(polls_process, setup, "main([])")
    sent = (f"main([]) while sys.argv names {decoy.name} (a file that does not exist), CONFIG_LOCATIONS = "
            f"[polls.yaml (port {config['port']})] and that port is taken (web.run_app raises OSError: "
            "address already in use)")  # fmt: skip
    if decoy.name in output or decoy.name in str(seen.get("outcome")):
        pytest.fail(f"{sent}: expected main([]) to parse no options, it read {decoy.name} from sys.argv: "
                    f"{seen.get('outcome')}\nHint: pass main's own argv on, get_config(argv): an empty list "
                    "means no options; `argv or sys.argv[1:]` reads the process's command line instead.",
                    pytrace=False)  # fmt: skip
    ports = [c.get("port") for c in seen.get("calls", [])]
    assert len(ports) != 1 or ports == [config["port"]], (
        f"{sent}: expected web.run_app on the configured port {config['port']}, it got port {ports[0]}. "
        "Hint: serve on config['host'] and config['port'], not fixed values."
    )
    assert ports == [config["port"]], (
        f"{sent}: expected one call of web.run_app, on port {config['port']}, and the error to end the "
        f"program; web.run_app was called on the ports {ports}. Hint: do not catch the OSError to try "
        "another port: the config asked for this one, and a server quietly elsewhere is one nobody finds."
    )
    assert str(seen.get("outcome", "")).startswith("OSError"), (
        f"{sent}: expected the OSError to end main() with its traceback (a taken port is not a bad "
        f"configuration), main() ended with: {seen.get('outcome')}\nHint: catch ConfigError only, around "
        "get_config, not around web.run_app."
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

"""Step 3: configuration from YAML, validated with trafaret, found in predefined places or via --config."""

import urllib.request
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from tests.conftest import valid_config
from workbook.pg import free_port


def write_config(path: Path, data) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def config_error(polls, path: Path) -> str:
    """load_config(path) must raise ConfigError; return its message."""
    load_config = polls.attribute("settings", "load_config")
    config_error_class = polls.attribute("settings", "ConfigError")
    try:
        load_config(path)
    except config_error_class as exc:
        return str(exc)
    except NotImplementedError:
        raise
    except Exception as exc:
        pytest.fail(
            f"expected ConfigError for {path.name}, got {type(exc).__name__}: {exc}. "
            "Hint: catch the underlying error and raise ConfigError with the file name and the field.",
            pytrace=False,
        )
    pytest.fail(f"expected ConfigError for {path.name}, but load_config accepted it", pytrace=False)


# --- task 1: load_config -------------------------------------------------------------------------------


@pytest.mark.task(1)
def test_valid_file_loads(polls, tmp_path):
    load_config = polls.attribute("settings", "load_config")
    expected = valid_config()
    got = load_config(write_config(tmp_path / "polls.yaml", expected))
    assert got == expected, f"expected load_config to return the file's content {expected}, got {got}"


@pytest.mark.task(1)
def test_workbook_config_file_is_valid(polls):
    load_config = polls.attribute("settings", "load_config")
    root_config = polls.tree.parents[1] / "config" / "polls.yaml"
    config = load_config(root_config)
    assert config["port"] == 8080 and config["postgres"]["port"] == 5432, (
        f"expected config/polls.yaml to load with port 8080 and postgres.port 5432, got {config}"
    )


@pytest.mark.task(1)
@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda c: c.pop("host"), "host"),
        (lambda c: c["postgres"].pop("database"), "postgres.database"),
        (lambda c: c.update(port="eighty"), "port"),
        (lambda c: c.update(port=70000), "port"),
        (lambda c: c["postgres"].update(port=0), "postgres.port"),
        (lambda c: c["postgres"].update(maxsize="lots"), "postgres.maxsize"),
        (lambda c: c.update(host="not an address"), "host"),
        (lambda c: c.update(prot=8080), "prot"),
    ],
    ids=["missing-host", "missing-database", "port-not-int", "port-too-big", "db-port-zero", "maxsize-text",
         "host-not-ip", "misspelt-key"],
)  # fmt: skip
def test_invalid_values_name_the_field_and_file(polls, tmp_path, change, field):
    config = valid_config()
    change(config)
    path = write_config(tmp_path / "broken.yaml", config)
    message = config_error(polls, path)
    assert field in message, f"expected the error to name the field {field!r}, got: {message}"
    assert "broken.yaml" in message, f"expected the error to name the file broken.yaml, got: {message}"


@pytest.mark.task(1)
@pytest.mark.parametrize(
    ("content", "what"),
    [
        ("postgres: [unclosed\nhost: 127.0.0.1\n", "malformed YAML"),
        ("", "an empty file"),
        ("just a sentence\n", "a plain string"),
    ],
)
def test_unusable_yaml_names_the_file(polls, tmp_path, content, what):
    message = config_error(polls, write_config(tmp_path / "odd.yaml", content))
    assert "odd.yaml" in message, f"expected the error for {what} to name odd.yaml, got: {message}"


@pytest.mark.task(1)
def test_yaml_tags_are_not_executed(polls, tmp_path):
    """yaml.safe_load refuses Python object tags; plain yaml.load(..., Loader=Loader) would run them."""
    marker = tmp_path / "executed"
    content = f"!!python/object/apply:os.system ['touch {marker}']\n"
    message = config_error(polls, write_config(tmp_path / "evil.yaml", content))
    assert not marker.exists(), "the YAML tag ran a command: use yaml.safe_load"
    assert "evil.yaml" in message


@pytest.mark.task(1)
def test_binary_file_names_the_file(polls, tmp_path):
    path = tmp_path / "picture.yaml"
    path.write_bytes(bytes(range(256)))
    message = config_error(polls, path)
    assert "picture.yaml" in message, f"expected the error to name picture.yaml, got: {message}"


@pytest.mark.task(1)
def test_missing_file_names_the_file(polls, tmp_path):
    message = config_error(polls, tmp_path / "nowhere.yaml")
    assert "nowhere.yaml" in message, f"expected the error to name nowhere.yaml, got: {message}"


@pytest.mark.task(1)
def test_unreadable_file_names_the_file(polls, tmp_path):
    # A directory cannot be read as a file, even by root (chmod 000 would not stop root).
    folder = tmp_path / "a-folder.yaml"
    folder.mkdir()
    message = config_error(polls, folder)
    assert "a-folder.yaml" in message, f"expected the error to name a-folder.yaml, got: {message}"


# --- task 2: get_config --------------------------------------------------------------------------------


@pytest.mark.task(2)
def test_config_option_wins(polls, tmp_path, monkeypatch):
    settings = polls.module("settings")
    default = write_config(tmp_path / "default.yaml", valid_config(port=8001))
    chosen = write_config(tmp_path / "chosen.yaml", valid_config(port=8002))
    monkeypatch.setattr(settings, "CONFIG_LOCATIONS", [default])
    got = settings.get_config(["--config", str(chosen)])
    assert got["port"] == 8002, f"expected --config chosen.yaml (port 8002) to win, got port {got['port']}"


@pytest.mark.task(2)
def test_first_existing_location_is_used(polls, tmp_path, monkeypatch):
    settings = polls.module("settings")
    second = write_config(tmp_path / "second.yaml", valid_config(port=8002))
    third = write_config(tmp_path / "third.yaml", valid_config(port=8003))
    monkeypatch.setattr(settings, "CONFIG_LOCATIONS", [tmp_path / "missing.yaml", second, third])
    got = settings.get_config([])
    assert got["port"] == 8002, (
        f"expected the first location that exists (second.yaml, port 8002), got port {got['port']}"
    )


@pytest.mark.task(2)
def test_no_location_lists_where_it_looked(polls, tmp_path, monkeypatch):
    settings = polls.module("settings")
    places = [tmp_path / "a.yaml", tmp_path / "b.yaml"]
    monkeypatch.setattr(settings, "CONFIG_LOCATIONS", places)
    with pytest.raises(settings.ConfigError) as caught:
        settings.get_config([])
    message = str(caught.value)
    assert "a.yaml" in message and "b.yaml" in message, (
        f"expected the error to list every place searched (a.yaml, b.yaml), got: {message}"
    )
    assert "--config" in message, f"expected the error to mention --config as a way out, got: {message}"


@pytest.mark.task(2)
def test_workbook_config_is_a_predefined_location(polls, tmp_path, monkeypatch):
    settings = polls.module("settings")
    monkeypatch.chdir(tmp_path)  # no polls.yaml in the current directory
    expected = settings.load_config(polls.tree.parents[1] / "config" / "polls.yaml")
    assert settings.get_config([]) == expected, "expected get_config([]) to find config/polls.yaml"


# --- task 3: the app and main() --------------------------------------------------------------------------


@pytest.mark.task(3)
async def test_init_app_keeps_config_under_app_key(polls, aiohttp_client):
    init_app = polls.attribute("main", "init_app")
    config_key = polls.attribute("settings", "CONFIG_KEY")
    assert isinstance(config_key, web.AppKey), (
        f"expected settings.CONFIG_KEY to be a web.AppKey, got {type(config_key).__name__}"
    )
    config = valid_config()
    app = init_app(config)
    assert app.get(config_key) == config, (
        f"expected app[CONFIG_KEY] to hold the config, got {app.get(config_key)!r}"
    )
    client = await aiohttp_client(app)
    response = await client.get("/")
    assert (response.status, await response.text()) == (200, "Hello Aiohttp!")


@pytest.mark.task(3)
def test_main_reports_bad_config_without_traceback(polls_process, tmp_path):
    path = write_config(tmp_path / "bad.yaml", valid_config(port="eighty"))
    result = polls_process.run("aiohttpdemo_polls", "--config", str(path))
    last_lines = "\n".join(result.stderr.strip().splitlines()[-3:])
    assert result.returncode == 2, (
        f"expected exit status 2 for a bad config, got {result.returncode}; the end of stderr:\n{last_lines}"
    )
    assert "bad.yaml" in result.stderr and "port" in result.stderr, (
        f"expected stderr to name bad.yaml and the field port, got:\n{result.stderr}"
    )
    assert "Traceback" not in result.stderr, (
        f"expected one clear message, got a traceback:\n{result.stderr}\n"
        "Hint: catch ConfigError in main() and print it."
    )


@pytest.mark.task(3)
def test_main_serves_on_configured_port(polls_process, tmp_path):
    port = free_port()
    path = write_config(tmp_path / "polls.yaml", valid_config(port=port))
    server = polls_process.start("aiohttpdemo_polls", "--config", str(path))
    polls_process.wait_for_port(server, port)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
        body = response.read().decode()
    assert body == "Hello Aiohttp!", f"expected the running app to answer 'Hello Aiohttp!', got {body!r}"

"""Settings: defaults, the TOML file, `GPUNODE_*` environment, explicit arguments, bad values."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from node.config import load_settings
from node.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Neither the developer's config file nor their GPUNODE_* variables reach these tests."""
    for name in list(os.environ):
        if name.startswith("GPUNODE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GPUNODE_CONFIG", str(tmp_path / "absent.toml"))


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_can_load_defaults_without_a_file() -> None:
    settings = load_settings()
    assert settings.chain.rpc_url == "embedded"
    assert settings.chain.confirmations == 0
    assert settings.keys.password_env == "GPUNODE_KEY_PASSWORD"


def test_can_read_the_toml_file(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        '[chain]\nrpc_url = "http://127.0.0.1:8545"\nconfirmations = 3\n[keys]\nkeystore = "/srv/key.json"\n',
    )
    settings = load_settings(config)
    assert settings.chain.rpc_url == "http://127.0.0.1:8545"
    assert settings.chain.confirmations == 3
    assert settings.keys.keystore == Path("/srv/key.json")
    assert settings.chain.receipt_timeout_s == 60.0  # untouched keys keep their defaults


def test_can_find_the_toml_file_through_gpunode_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path, "[chain]\nconfirmations = 5\n")
    monkeypatch.setenv("GPUNODE_CONFIG", str(config))
    assert load_settings().chain.confirmations == 5


def test_can_override_the_file_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path, '[chain]\nconfirmations = 3\nrpc_url = "http://file:8545"\n')
    monkeypatch.setenv("GPUNODE_CHAIN__CONFIRMATIONS", "7")
    settings = load_settings(config)
    assert settings.chain.confirmations == 7
    assert settings.chain.rpc_url == "http://file:8545"


def test_can_override_the_environment_with_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUNODE_LOG_LEVEL", "DEBUG")
    assert load_settings().log_level == "DEBUG"
    assert load_settings(log_level="WARNING").log_level == "WARNING"


def test_can_leave_gpunode_config_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = str(tmp_path / "absent.toml")
    load_settings(write_config(tmp_path, "[chain]\nconfirmations = 1\n"))
    assert os.environ["GPUNODE_CONFIG"] == before


def test_cannot_load_a_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nowhere.toml")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("[chain]\nconfirmations = -1\n", "chain.confirmations"),
        ('[chain]\nreceipt_timeout_s = "soon"\n', "chain.receipt_timeout_s"),
        ('[chain]\nrpc_url = "ftp://example.org"\n', "chain.rpc_url"),
        ('[chain]\nmarket_address = "0x1234"\n', "chain.market_address"),
        ("[chain]\nconfirmation = 2\n", "chain.confirmation"),
        ('[keys]\npassword = "plain"\n', "keys.password"),
        ("[client]\nexploration = 1.5\n", "client.exploration"),
        ("colour = true\n", "colour"),
    ],
)
def test_cannot_load_a_bad_value_from_the_file(tmp_path: Path, text: str, field: str) -> None:
    config = write_config(tmp_path, text)
    with pytest.raises(ConfigError, match="invalid settings") as caught:
        load_settings(config)
    assert field in str(caught.value)
    assert config.read_text() == text


def test_cannot_load_a_bad_value_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUNODE_CHAIN__RPC_RETRIES", "many")
    with pytest.raises(ConfigError, match=r"chain\.rpc_retries"):
        load_settings()


def test_cannot_load_malformed_toml(tmp_path: Path) -> None:
    config = write_config(tmp_path, "[chain\nrpc_url =")
    with pytest.raises(ConfigError, match="config"):
        load_settings(config)


def test_can_resolve_relative_paths_under_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUNODE_HOME", str(tmp_path / "home"))
    settings = load_settings(executor={"model_dir": "/srv/models"})
    assert settings.keys.keystore == tmp_path / "home" / "keystore.json"
    assert settings.executor.model_dir == Path("/srv/models")
    assert settings.storage.url == f"sqlite:///{tmp_path / 'home' / 'gpunode.db'}"


@pytest.mark.parametrize("section", ["p2p", "executor", "storage", "api", "client", "provider"])
def test_cannot_load_a_misspelt_key_in_any_section(tmp_path: Path, section: str) -> None:
    config = write_config(tmp_path, f"[{section}]\nno_such_setting = 1\n")
    with pytest.raises(ConfigError, match="no_such_setting"):
        load_settings(config)


def test_can_serve_http_on_loopback_for_clients_and_not_for_providers_by_default() -> None:
    http = load_settings().http
    assert http.listen == "127.0.0.1:8000"
    assert http.loopback
    assert http.serves(provider=False)
    assert not http.serves(provider=True)


def test_can_turn_the_http_face_on_for_a_provider_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GPUNODE_HTTP__ENABLED", "true")
    monkeypatch.setenv("GPUNODE_HTTP__LISTEN", "0.0.0.0:9100")
    monkeypatch.setenv("GPUNODE_HTTP__REQUIRE_TOKEN", "true")
    http = load_settings().http
    assert http.serves(provider=True)
    assert (http.host, http.port, http.loopback, http.require_token) == ("0.0.0.0", 9100, False, True)


def test_cannot_give_the_http_face_a_listen_address_without_a_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUNODE_HTTP__LISTEN", "localhost")
    with pytest.raises(ConfigError, match=r"http\.listen"):
        load_settings()

"""config.resolve(): flag > environment > config-file profile > default, with sources."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from logits_cli import config
from logits_cli.errors import AuthError, ConfigError


def write_config(home: Path, text: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(text)


def test_no_remote_means_embedded(tmp_path: Path) -> None:
    settings = config.resolve(env={"LOGITS_HOME": str(tmp_path)})
    assert settings.embedded
    assert settings.home == tmp_path
    assert settings.store_dir == tmp_path / "store"
    assert settings.sources["home"] == "env LOGITS_HOME"
    assert settings.api_key() is None


def test_precedence_flag_env_profile(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        '[profiles.team]\nbase_url = "https://team.example/api"\napi_key = "tml-profile"\n'
        'run = "r-profile"\n',
    )
    env = {"LOGITS_HOME": str(tmp_path), "LOGITS_PROFILE": "team"}
    from_profile = config.resolve(env=env)
    assert from_profile.base_url == "https://team.example/api"
    assert from_profile.sources["base_url"] == "config profile team"
    assert from_profile.api_key() == "tml-profile"
    assert from_profile.run == "r-profile"

    env |= {"TINKER_BASE_URL": "http://tinker.example", "LOGITS_RUN": "r-env"}
    from_env = config.resolve(env=env)
    assert from_env.base_url == "http://tinker.example"
    assert from_env.sources["base_url"] == "env TINKER_BASE_URL"
    assert from_env.run == "r-env"

    env |= {"LOGITS_BASE_URL": "http://logits.example"}
    assert config.resolve(env=env).base_url == "http://logits.example"

    from_flag = config.resolve(env=env, base_url="http://flag.example", run="r-flag")
    assert from_flag.base_url == "http://flag.example"
    assert from_flag.sources["base_url"] == "--base-url"
    assert from_flag.run == "r-flag"


def test_empty_values_count_as_unset(tmp_path: Path) -> None:
    settings = config.resolve(
        env={"LOGITS_HOME": str(tmp_path), "LOGITS_BASE_URL": "  ", "LOGITS_API_KEY": ""}
    )
    assert settings.embedded
    assert settings.api_key() is None


def test_key_precedence(tmp_path: Path) -> None:
    base = {"LOGITS_HOME": str(tmp_path), "TINKER_API_KEY": "tml-tinker"}
    assert config.resolve(env=base).api_key() == "tml-tinker"
    with_cmd = base | {"LOGITS_API_KEY_CMD": "echo '  tml-from-cmd  '"}
    assert config.resolve(env=with_cmd).api_key() == "tml-from-cmd"
    explicit = with_cmd | {"LOGITS_API_KEY": "tml-explicit"}
    assert config.resolve(env=explicit).api_key() == "tml-explicit"


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("exit 3", "exited with status 3"),
        ("true", "printed nothing"),
    ],
)
def test_key_command_failures_are_auth_errors(tmp_path: Path, command: str, message: str) -> None:
    settings = config.resolve(env={"LOGITS_HOME": str(tmp_path), "LOGITS_API_KEY_CMD": command})
    with pytest.raises(AuthError, match=message):
        settings.api_key()


def test_key_command_runs_once_per_process(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    command = f"{sys.executable} -c \"import pathlib; p=pathlib.Path('{counter}'); p.write_text(p.read_text() + 'x' if p.exists() else 'x'); print('tml-once')\""
    settings = config.resolve(env={"LOGITS_HOME": str(tmp_path), "LOGITS_API_KEY_CMD": command})
    assert settings.api_key() == "tml-once"
    assert settings.api_key() == "tml-once"
    assert counter.read_text() == "x"


def test_bad_inputs_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="absolute http"):
        config.resolve(env={"LOGITS_HOME": str(tmp_path), "LOGITS_BASE_URL": "example.org"})
    with pytest.raises(ConfigError, match="profile 'nope'"):
        config.resolve(env={"LOGITS_HOME": str(tmp_path)}, profile="nope")
    write_config(tmp_path, "this is = = not toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.resolve(env={"LOGITS_HOME": str(tmp_path)})


def test_mask_secret_never_shows_the_key() -> None:
    key = "tml-" + "A" * 43
    masked = config.mask_secret(key)
    assert key not in masked
    assert masked.startswith("tml-")
    assert config.mask_secret(None) == "(not set)"

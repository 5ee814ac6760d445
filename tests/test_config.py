"""config.resolve(): flag > environment > config-file profile > default, with sources."""

from __future__ import annotations

import re
import socket
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


# -- F11: a config file is checked whole; mistakes are exit 2, never the embedded backend ---


def resolve_prod(home: Path, text: str) -> config.Settings:
    write_config(home, text)
    return config.resolve(env={"LOGITS_HOME": str(home), "LOGITS_PROFILE": "prod"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[profiles.prod]\nbaseurl = "https://prod.example"\n',
            "[profiles.prod] unknown key 'baseurl' (did you mean 'base_url'?)",
        ),
        (
            '[profiles.prod]\napi_key_command = "pass show logits"\n',
            "[profiles.prod] unknown key 'api_key_command' (did you mean 'api_key_cmd'?)",
        ),
        (
            '[profiles.prod]\nzone = "eu"\n',
            "[profiles.prod] unknown key 'zone' (known keys: api_key, api_key_cmd, base_url, run)",
        ),
        (
            "[profiles.prod]\nbase_url = 5\n",
            "[profiles.prod] base_url must be a string (an absolute http(s) URL), not an integer",
        ),
        (
            "[profiles.prod]\napi_key = true\n",
            "[profiles.prod] api_key must be a string (an API key), not a boolean",
        ),
        (
            '[profiles.prod]\nbase_url = ["https://a.example"]\n',
            "[profiles.prod] base_url must be a string (an absolute http(s) URL), not an array",
        ),
        (
            '[profiles.prod]\nbase_url = "https://prod.example"\n[profiles.prod.extra]\nx = 1\n',
            "[profiles.prod] unknown key 'extra'",
        ),
        (
            '[profiles.prod]\nbase_url = ""\n',
            "base URL '' (from {path}: [profiles.prod]) must be an absolute http(s) URL",
        ),
        (
            'base_url = "https://prod.example"\n[profiles.prod]\n',
            "unknown key 'base_url' (base_url belongs in a [profiles.NAME] table)",
        ),
        ('profiles = "prod"\n', "'profiles' must be a table of [profiles.NAME] tables"),
        ("profile = 3\n[profiles.prod]\n", "'profile' must be a string"),
        ('[profiles]\nprod = "https://x.example"\n', "profiles.prod must be a [profiles.prod]"),
    ],
)
def test_config_mistakes_name_the_file_the_key_and_the_expectation(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "config.toml"
    with pytest.raises(ConfigError) as caught:
        resolve_prod(tmp_path, text)
    assert str(caught.value).startswith(f"{path}:") or f"from {path}:" in str(caught.value)
    assert message.format(path=path) in str(caught.value)
    assert caught.value.exit_code == 2


def test_a_mistake_in_another_profile_is_reported_too(tmp_path: Path) -> None:
    write_config(
        tmp_path, '[profiles.ok]\nbase_url = "https://ok.example"\n[profiles.bad]\nrn = 1\n'
    )
    with pytest.raises(
        ConfigError, match=r"\[profiles.bad\] unknown key 'rn' \(did you mean 'run'"
    ):
        config.resolve(env={"LOGITS_HOME": str(tmp_path), "LOGITS_PROFILE": "ok"})


def test_wrong_typed_secrets_are_not_quoted(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_prod(tmp_path, "[profiles.prod]\napi_key = 123456789\n")
    assert "123456789" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "profile 'prod' (from env LOGITS_PROFILE) is not defined: {path} does not exist"),
        (
            '[profiles.prd]\nbase_url = "https://prod.example"\n',
            "profile 'prod' (from env LOGITS_PROFILE) is not in {path} (did you mean 'prd'?)",
        ),
        (
            '[profiles.staging]\nbase_url = "https://s.example"\n',
            "profile 'prod' (from env LOGITS_PROFILE) is not in {path} (defined: staging)",
        ),
    ],
)
def test_an_undefined_profile_is_a_config_error(
    tmp_path: Path, text: str | None, message: str
) -> None:
    if text is not None:
        write_config(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        config.resolve(env={"LOGITS_HOME": str(tmp_path), "LOGITS_PROFILE": "prod"})
    assert str(caught.value) == message.format(path=tmp_path / "config.toml")


def test_a_valid_file_still_resolves(tmp_path: Path) -> None:
    settings = resolve_prod(
        tmp_path,
        'profile = "prod"\n[profiles.prod]\nbase_url = "https://prod.example"\n'
        'api_key_cmd = "echo tml-k"\nrun = "r1"\n[profiles.empty]\n',
    )
    assert settings.base_url == "https://prod.example"
    assert settings.run == "r1"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            '[profiles.prod]\nbaseurl = "https://prod.example"\n',
            "Error: {path}: [profiles.prod] unknown key 'baseurl' (did you mean 'base_url'?)",
        ),
        (
            "[profiles.prod]\nbase_url = 5\n",
            "Error: {path}: [profiles.prod] base_url must be a string (an absolute http(s) URL),"
            " not an integer",
        ),
        (None, "Error: profile 'prod' (from env LOGITS_PROFILE) is not defined: {path} does not"),
    ],
)
def test_cli_sync_with_a_broken_profile_exits_2_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str | None, line: str
) -> None:
    # Before the fix: exit 0, a sync from the embedded backend instead of the service.
    from tests.cli.conftest import invoke

    home = tmp_path / "home"
    home.mkdir()
    if text is not None:
        write_config(home, text)
    monkeypatch.setenv("LOGITS_HOME", str(home))
    monkeypatch.setenv("LOGITS_PROFILE", "prod")
    dest = tmp_path / "D"
    result = invoke(["ckpt", "sync", "-o", str(dest)])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    first = result.stderr.splitlines()[0]
    assert first.startswith(line.format(path=home / "config.toml")), first
    assert "Traceback" not in result.stderr
    assert not dest.exists()
    assert not (home / "store").exists()


# -- a key goes only to the base URL it was configured with (issue 21 K1) -----------------

TEAM = '[profiles.team]\nbase_url = "https://team.example/api"\napi_key = "tml-team"\n'


@pytest.mark.parametrize(
    ("env_url", "flag_url"),
    [
        ("https://team.example:443/other/path", None),  # same origin: the default port
        ("https://TEAM.example./api", None),  # host names are case-blind; a trailing dot
        (None, "https://team.example/v2"),
    ],
)
def test_a_profile_key_goes_to_its_own_origin(
    tmp_path: Path, env_url: str | None, flag_url: str | None
) -> None:
    write_config(tmp_path, TEAM)
    env = {"LOGITS_HOME": str(tmp_path), "LOGITS_PROFILE": "team"}
    if env_url:
        env["LOGITS_BASE_URL"] = env_url
    assert config.resolve(env=env, base_url=flag_url).api_key() == "tml-team"


@pytest.mark.parametrize(
    ("env_url", "flag_url", "shown"),
    [
        (
            "https://evil.example",
            None,
            "https://evil.example (the base URL from env LOGITS_BASE_URL)",
        ),
        ("http://team.example/api", None, "http://team.example (the base URL"),  # scheme
        ("https://team.example:8443/api", None, "https://team.example:8443 (the base URL"),
        (None, "https://evil.example", "https://evil.example (the base URL from --base-url)"),
    ],
)
def test_a_profile_key_is_refused_for_another_origin(
    tmp_path: Path, env_url: str | None, flag_url: str | None, shown: str
) -> None:
    ran = tmp_path / "key-command-ran"
    write_config(tmp_path, TEAM.replace('api_key = "tml-team"', f'api_key_cmd = "touch {ran}"'))
    env = {"LOGITS_HOME": str(tmp_path), "LOGITS_PROFILE": "team"}
    if env_url:
        env["LOGITS_BASE_URL"] = env_url
    settings = config.resolve(env=env, base_url=flag_url)
    with pytest.raises(ConfigError) as caught:
        settings.api_key()
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith(
        "the API key from config profile team (command) is for https://team.example, not for "
        + shown
    )
    assert not ran.exists(), "the key command must not even run"
    assert settings.sources["api_key"].endswith("(refused: configured for another base URL)")


def test_keys_and_urls_of_one_layer_go_together(tmp_path: Path) -> None:
    write_config(tmp_path, TEAM)
    env = {"LOGITS_HOME": str(tmp_path), "LOGITS_PROFILE": "team"}
    both_env = env | {"LOGITS_BASE_URL": "https://other.example", "LOGITS_API_KEY": "tml-env"}
    assert config.resolve(env=both_env).api_key() == "tml-env"
    tinker = env | {"TINKER_BASE_URL": "https://other.example", "TINKER_API_KEY": "tml-t"}
    assert config.resolve(env=tinker).api_key() == "tml-t"
    # An environment key with no URL beside it goes where the URL is set (profile or flag).
    key_only = env | {"LOGITS_API_KEY": "tml-env"}
    assert config.resolve(env=key_only).api_key() == "tml-env"
    flagged = config.resolve(env=key_only, base_url="https://flag.example")
    assert flagged.api_key() == "tml-env"
    # ... but an environment key beside an environment URL belongs to that URL.
    with pytest.raises(
        ConfigError, match=re.escape("is for https://other.example, not for https://flag")
    ):
        config.resolve(env=both_env, base_url="https://flag.example").api_key()


def test_a_profile_key_without_a_profile_url_is_sent_nowhere(tmp_path: Path) -> None:
    write_config(tmp_path, '[profiles.keyonly]\napi_key = "tml-k"\n')
    env = {
        "LOGITS_HOME": str(tmp_path),
        "LOGITS_PROFILE": "keyonly",
        "LOGITS_BASE_URL": "https://evil.example",
    }
    with pytest.raises(ConfigError, match="has no base_url beside it in that profile"):
        config.resolve(env=env).api_key()
    embedded = config.resolve(env=env | {"LOGITS_BASE_URL": ""})
    assert embedded.embedded and embedded.api_key() == "tml-k"  # never sent anywhere


def test_a_base_url_without_a_host_is_a_config_error(tmp_path: Path) -> None:
    for url in ("https://:443/x", "https://host:99999"):
        with pytest.raises(ConfigError, match="is not a valid URL"):
            config.resolve(env={"LOGITS_HOME": str(tmp_path), "LOGITS_BASE_URL": url})


def test_a_header_logging_server_never_receives_a_profile_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack: LOGITS_BASE_URL names a server that logs headers while the team profile
    holds the key. Refused before any request (exit 2, one line); the same server does get
    a key given beside its URL, so it would have logged this one."""
    from tests.cli.conftest import invoke
    from tests.hostile_server import Request, head, hostile

    def unauthorized(_request: Request, sock: socket.socket) -> None:
        body = b'{"detail": "no"}'
        sock.sendall(head(401, {"Content-Type": "application/json", "Content-Length": "16"}) + body)

    home = tmp_path / "home"
    write_config(home, TEAM.replace("tml-team", "tml-team-secret"))
    monkeypatch.setenv("LOGITS_HOME", str(home))
    monkeypatch.setenv("LOGITS_PROFILE", "team")
    with hostile(unauthorized) as logger:
        monkeypatch.setenv("LOGITS_BASE_URL", logger.base_url)
        for args in (["ckpt", "ls"], ["--base-url", logger.base_url, "runs", "ls"]):
            result = invoke(args)
            assert result.exit_code == 2, (result.stdout, result.stderr)
            assert result.stderr.startswith(
                "Error: the API key from config profile team is for https://team.example, "
                f"not for {logger.base_url} "
            )
            assert "Traceback" not in result.stderr and "tml-team-secret" not in result.stderr
        assert not any("tml-team-secret" in str(r.headers) for r in logger.requests)

        monkeypatch.setenv("LOGITS_API_KEY", "tml-env-key")
        assert invoke(["ckpt", "ls"]).exit_code == 3
        assert any(r.headers.get("x-api-key") == "tml-env-key" for r in logger.requests)
        assert not any("tml-team-secret" in str(r.headers) for r in logger.requests)

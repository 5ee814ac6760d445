"""Settings and the one resolver: flag > environment > config-file profile > default.

``resolve()`` is the only reader of ``os.environ`` and of ``config.toml`` in the project.
It is cheap (no network, no heavy imports) and records where each value came from, which
``logits config show`` prints. The API key command runs lazily, at most once per process.

``config.toml`` is checked whole before anything is taken from it (``config_file.py``). So
is a profile name (``--profile``, ``LOGITS_PROFILE``, top-level ``profile``) that the file
does not define.

An API key is sent only to the base URL it was configured with (as ``gh`` keeps a token per
host; issue 21 K1): a profile's key belongs to the profile's ``base_url``, and a key in the
environment to a base URL in the environment, if one is there. A base URL from another layer
(``--base-url`` or ``LOGITS_BASE_URL`` over a profile) with another origin (scheme, host,
port) makes ``Settings.api_key()`` a ``ConfigError`` (exit 2): the key, or its command, is
never used. A key in the environment with no base URL there goes where the URL is set.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from logits_cli.config_file import (
    check_base_url,
    check_config_file,
    load_config_file,
    missing_profile_error,
    origin_text,
    url_origin,
)
from logits_cli.errors import AuthError, ConfigError

CONFIG_FILE_NAME = "config.toml"
KEY_COMMAND_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Settings:
    home: Path
    base_url: str | None
    profile: str | None
    run: str | None
    debug: bool
    api_key_value: str | None = field(default=None, repr=False)
    api_key_cmd: str | None = field(default=None, repr=False)
    # Why the key must not go to ``base_url`` (configured for another host), or None.
    api_key_refusal: str | None = None
    # setting name -> where its value came from ("--base-url", "env LOGITS_RUN", …)
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def embedded(self) -> bool:
        """No remote configured: the reference server runs in this process."""
        return self.base_url is None

    @property
    def store_dir(self) -> Path:
        """Where the embedded backend keeps its SQLite file and blobs."""
        return self.home / "store"

    @property
    def config_file(self) -> Path:
        return self.home / CONFIG_FILE_NAME

    def api_key(self) -> str | None:
        """The API key: ``LOGITS_API_KEY``, then the key command, then ``TINKER_API_KEY``."""
        self.check_api_key_destination()
        if self.api_key_value is not None:
            return self.api_key_value
        if self.api_key_cmd is not None:
            return run_key_command(self.api_key_cmd)
        return None

    def check_api_key_destination(self) -> None:
        """ConfigError if the key was configured for another base URL than ``base_url``."""
        if self.api_key_refusal is not None:
            raise ConfigError(
                self.api_key_refusal,
                hint="set the base URL and its key in the same place (both in the environment,"
                " or both in one profile), or unset the one that does not belong",
            )


_key_command_cache: dict[str, str] = {}


# What a failed key command's stderr may add to the error: its last lines, this long at most.
KEY_COMMAND_STDERR_LINES = 3
KEY_COMMAND_STDERR_CHARS = 300


def key_command_stderr(stderr: bytes | None, stdout: bytes | None) -> str:
    """``: LAST LINES`` of a key command's stderr (joined by `` | ``, the end kept when
    long), or nothing. Anything it also printed on stdout, which may be the key, is masked."""
    text = (stderr or b"").decode("utf-8", "replace")
    printed = (stdout or b"").decode("utf-8", "replace").strip()
    if printed:
        text = text.replace(printed, mask_secret(printed))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    said = " | ".join(lines[-KEY_COMMAND_STDERR_LINES:])
    if len(said) > KEY_COMMAND_STDERR_CHARS:
        said = "…" + said[-(KEY_COMMAND_STDERR_CHARS - 1) :]
    return f": {said}" if said else ""


def run_key_command(command: str) -> str:
    """Run ``LOGITS_API_KEY_CMD`` once per process; its stripped stdout is the key. A failure
    quotes the end of the command's stderr (a secret manager's own reason), never its stdout."""
    cached = _key_command_cache.get(command)
    if cached is not None:
        return cached
    try:
        done = subprocess.run(
            command,
            shell=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=KEY_COMMAND_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as timeout:
        said = key_command_stderr(timeout.stderr, timeout.stdout)
        raise AuthError(
            f"the API key command timed out after {KEY_COMMAND_TIMEOUT_S:.0f} s{said}",
            hint="check LOGITS_API_KEY_CMD",
        ) from None
    except OSError as exc:
        raise AuthError(f"the API key command could not run: {exc.strerror}") from None
    said = key_command_stderr(done.stderr, done.stdout)
    if done.returncode != 0:
        raise AuthError(
            f"the API key command exited with status {done.returncode}{said}",
            hint="check LOGITS_API_KEY_CMD",
        )
    key = done.stdout.decode("utf-8", "replace").strip()
    if not key:
        raise AuthError(
            f"the API key command printed nothing{said}", hint="check LOGITS_API_KEY_CMD"
        )
    _key_command_cache[command] = key
    return key


def default_home(env: Mapping[str, str]) -> Path:
    from platformdirs import user_data_path

    del env  # platformdirs reads XDG variables itself
    return user_data_path("logits", appauthor=False)


def _env(env: Mapping[str, str], *names: str) -> tuple[str, str] | None:
    """The first non-empty variable among ``names``: (value, name). Empty counts as unset."""
    for name in names:
        value = env.get(name, "")
        if value.strip():
            return value.strip(), name
    return None


def _key_refusal(
    url: str | None, url_source: str, key_source: str, key_url: str | None, key_in_env: bool
) -> str | None:
    """Why a key from ``key_source``, configured for ``key_url``, must not go to ``url``."""
    if url is None or (key_url is not None and url_origin(key_url) == url_origin(url)):
        return None
    if key_url is None:
        if key_in_env:  # an environment key with no URL there goes where it is told
            return None
        return (
            f"the API key from {key_source} has no base_url beside it in that profile,"
            f" so it is not sent to {origin_text(url)} (the base URL from {url_source})"
        )
    return (
        f"the API key from {key_source} is for {origin_text(key_url)}, not for"
        f" {origin_text(url)} (the base URL from {url_source}): it is not sent to another host"
    )


def resolve(
    *,
    base_url: str | None = None,
    profile: str | None = None,
    home: str | os.PathLike[str] | None = None,
    run: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve the settings. Keyword arguments are command-line flags (None = not given)."""
    env = os.environ if env is None else env
    sources: dict[str, str] = {}

    if home is not None:
        home_path, sources["home"] = Path(home).expanduser(), "--home"
    elif found := _env(env, "LOGITS_HOME"):
        home_path, sources["home"] = Path(found[0]).expanduser(), f"env {found[1]}"
    else:
        home_path, sources["home"] = default_home(env), "default"

    config_path = home_path / CONFIG_FILE_NAME
    config = load_config_file(config_path)
    profiles = check_config_file(config_path, config)

    if profile is not None:
        profile_name: str | None = profile
        sources["profile"] = "--profile"
    elif found := _env(env, "LOGITS_PROFILE"):
        profile_name, sources["profile"] = found[0], f"env {found[1]}"
    elif isinstance(config.get("profile"), str):
        profile_name, sources["profile"] = config["profile"], "config file"
    else:
        profile_name = None
    profile_table: dict[str, str] = {}
    if profile_name is not None:
        if profile_name not in profiles:
            raise missing_profile_error(profile_name, sources["profile"], config_path, profiles)
        profile_table = profiles[profile_name]
    where = f"config profile {profile_name}"

    resolved_url: str | None
    env_url = _env(env, "LOGITS_BASE_URL", "TINKER_BASE_URL")
    profile_url = profile_table.get("base_url", "").strip() or None
    if base_url is not None and base_url.strip():
        resolved_url, sources["base_url"] = (
            check_base_url(base_url.strip(), "--base-url"),
            "--base-url",
        )
    elif found := env_url:
        resolved_url = check_base_url(found[0], found[1])
        sources["base_url"] = f"env {found[1]}"
    elif profile_url is not None:
        resolved_url = check_base_url(profile_url, where)
        sources["base_url"] = where
    else:
        resolved_url, sources["base_url"] = None, "default (embedded backend)"

    key_value: str | None = None
    key_cmd: str | None = None
    if found := _env(env, "LOGITS_API_KEY"):
        key_value, sources["api_key"] = found[0], f"env {found[1]}"
    elif found := _env(env, "LOGITS_API_KEY_CMD"):
        key_cmd, sources["api_key"] = found[0], f"env {found[1]} (command)"
    elif found := _env(env, "TINKER_API_KEY"):
        key_value, sources["api_key"] = found[0], f"env {found[1]}"
    elif isinstance(profile_table.get("api_key_cmd"), str):
        key_cmd, sources["api_key"] = profile_table["api_key_cmd"], f"{where} (command)"
    elif isinstance(profile_table.get("api_key"), str):
        key_value, sources["api_key"] = profile_table["api_key"], where
    else:
        sources["api_key"] = "not set"
    refusal = None
    if key_value is not None or key_cmd is not None:
        in_env = sources["api_key"].startswith("env ")
        key_url = (env_url[0] if env_url else None) if in_env else profile_url
        if env_url and in_env:
            check_base_url(*env_url)
        refusal = _key_refusal(
            resolved_url,
            sources["base_url"],
            sources["api_key"],
            key_url,
            in_env,
        )
        if refusal is not None:
            sources["api_key"] += " (refused: configured for another base URL)"

    resolved_run: str | None
    if run is not None and run.strip():
        resolved_run, sources["run"] = run.strip(), "--run"
    elif found := _env(env, "LOGITS_RUN"):
        resolved_run, sources["run"] = found[0], f"env {found[1]}"
    elif isinstance(profile_table.get("run"), str):
        resolved_run, sources["run"] = profile_table["run"], where
    else:
        resolved_run, sources["run"] = None, "not set"

    debug = debug_enabled(env)
    sources["debug"] = "env LOGITS_DEBUG" if debug else "default"

    return Settings(
        home=home_path,
        base_url=resolved_url,
        profile=profile_name,
        run=resolved_run,
        debug=debug,
        api_key_value=key_value,
        api_key_cmd=key_cmd,
        api_key_refusal=refusal,
        sources=sources,
    )


def server_database(flag: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """Where ``logits server start`` keeps its metadata: ``--database``, else
    ``LOGITS_SERVER_DATABASE``; None means ``meta.sqlite3`` in the store directory. Only
    postgresql:// URLs are accepted (ConfigError otherwise)."""
    url, source = _server_location(flag, "--database", "LOGITS_SERVER_DATABASE", env)
    if url is not None and not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"database (from {source}) must be a postgresql:// URL")
    return url


def server_blobs(flag: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """Where ``logits server start`` keeps its blobs: ``--blobs``, else
    ``LOGITS_SERVER_BLOBS``; None means the store directory. Only s3:// URLs."""
    url, source = _server_location(flag, "--blobs", "LOGITS_SERVER_BLOBS", env)
    if url is not None and (not url.startswith("s3://") or len(url) <= len("s3://")):
        raise ConfigError(f"blobs (from {source}) must be an s3://BUCKET[/PREFIX] URL")
    return url


def _server_location(
    flag: str | None, flag_name: str, variable: str, env: Mapping[str, str] | None
) -> tuple[str | None, str]:
    """The flag's value, else the variable's: (value or None, where it came from)."""
    if flag is not None:
        return flag.strip(), flag_name
    if found := _env(os.environ if env is None else env, variable):
        return found[0], f"env {found[1]}"
    return None, ""


def debug_enabled(env: Mapping[str, str] | None = None) -> bool:
    """``LOGITS_DEBUG`` asks for tracebacks; readable even when the rest of the config is not."""
    env = os.environ if env is None else env
    return env.get("LOGITS_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


# A download whose size no source gives (no listed size, no Content-Length, no
# Content-Range) stops at this many bytes (docs/protocol.md §6.3 step 2).
MAX_UNSIZED_DOWNLOAD_VARIABLE = "LOGITS_MAX_UNSIZED_DOWNLOAD"
DEFAULT_MAX_UNSIZED_DOWNLOAD = 64 << 30
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def max_unsized_download(env: Mapping[str, str] | None = None) -> int:
    """``LOGITS_MAX_UNSIZED_DOWNLOAD`` (``64G``, ``500M``, ``1T``, bytes; binary units), else
    64 GiB. Environment only: it guards against a server, so no profile should lower it."""
    env = os.environ if env is None else env
    text = env.get(MAX_UNSIZED_DOWNLOAD_VARIABLE, "").strip()
    if not text:
        return DEFAULT_MAX_UNSIZED_DOWNLOAD
    number = text.upper().removesuffix("B").removesuffix("I")
    unit = number[-1:] if number[-1:] in _SIZE_UNITS else ""
    digits = number.removesuffix(unit) if unit else number
    if not digits.isdigit() or int(digits) <= 0:
        raise ConfigError(
            f"{MAX_UNSIZED_DOWNLOAD_VARIABLE} must be a size such as 64G, 500M or 1T; got {text!r}"
        )
    return int(digits) * _SIZE_UNITS[unit]


def mask_secret(secret: str | None) -> str:
    """Show enough of a key to recognise it, never enough to use it."""
    if not secret:
        return "(not set)"
    if len(secret) <= 12:
        return "****"
    return f"{secret[:8]}…{secret[-2:]}"

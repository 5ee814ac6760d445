"""``config.toml``: reading it and checking it whole, and the syntax of a base URL (which
the file, the environment and ``--base-url`` share). ``config.resolve`` is the one caller.

The file is checked whole before anything is taken from it: an unknown key (``baseurl``)
or a value of the wrong type (``base_url = 5``) anywhere in it is a ``ConfigError`` (exit 2)
naming the file, the table, the key and what was expected, since ignoring it would silently
select the embedded backend instead of the service the profile meant.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from logits_cli.errors import ConfigError

# Every key a [profiles.NAME] table may hold, and what its (string) value is.
PROFILE_KEYS: dict[str, str] = {
    "base_url": "an absolute http(s) URL",
    "api_key": "an API key",
    "api_key_cmd": "a shell command that prints the API key",
    "run": "a run id",
}
TOP_LEVEL_KEYS: dict[str, str] = {
    "profile": "the name of the default profile",
    "profiles": "a table of [profiles.NAME] tables",
}


def load_config_file(path: Path) -> dict[str, Any]:
    try:
        handle = path.open("rb")
    except FileNotFoundError:  # the common case: no file, and no TOML parser to import
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    import tomllib

    try:
        with handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None


def _toml_type(value: object) -> str:
    """The TOML name of a parsed value's type, for messages (never the value: it may be a
    secret)."""
    names = [
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a float"),
        (str, "a string"),
        (list, "an array"),
        (dict, "a table"),
    ]
    return next((name for cls, name in names if isinstance(value, cls)), "a date or time")


def _unknown_key(where: str, key: str, known: Mapping[str, str]) -> ConfigError:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    advice = f"did you mean {close[0]!r}?" if close else "known keys: " + ", ".join(sorted(known))
    if known is TOP_LEVEL_KEYS and key in PROFILE_KEYS:
        advice = f"{key} belongs in a [profiles.NAME] table"
    return ConfigError(f"{where} unknown key {key!r} ({advice})")


def check_config_file(path: Path, config: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Validate the whole file; return its profiles."""
    for key in config:
        if key not in TOP_LEVEL_KEYS:
            raise _unknown_key(f"{path}:", key, TOP_LEVEL_KEYS)
    default = config.get("profile")
    if default is not None and not isinstance(default, str):
        raise ConfigError(
            f"{path}: 'profile' must be a string ({TOP_LEVEL_KEYS['profile']}), "
            f"not {_toml_type(default)}"
        )
    profiles = config.get("profiles", {})
    if not isinstance(profiles, dict):
        raise ConfigError(
            f"{path}: 'profiles' must be a table of [profiles.NAME] tables, "
            f"not {_toml_type(profiles)}"
        )
    for name, table in profiles.items():
        where = f"{path}: [profiles.{name}]"
        if not isinstance(table, dict):
            raise ConfigError(
                f"{path}: profiles.{name} must be a [profiles.{name}] table, "
                f"not {_toml_type(table)}"
            )
        for key, value in table.items():
            if key not in PROFILE_KEYS:
                raise _unknown_key(where, key, PROFILE_KEYS)
            if not isinstance(value, str):
                raise ConfigError(
                    f"{where} {key} must be a string ({PROFILE_KEYS[key]}), not {_toml_type(value)}"
                )
        if "base_url" in table:
            check_base_url(table["base_url"].strip(), where)
    return profiles


def check_base_url(url: str, source: str) -> str:
    if not url.startswith(("http://", "https://")) or len(url) <= len("https://"):
        raise ConfigError(f"base URL {url!r} (from {source}) must be an absolute http(s) URL")
    try:
        url_origin(url)
    except ValueError as exc:
        raise ConfigError(f"base URL {url!r} (from {source}) is not a valid URL: {exc}") from None
    return url


def url_origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL, the default port filled in: what decides
    whether a credential configured for one URL may go to another. ValueError if no host."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ValueError("it names no host")
    return scheme, host, parts.port or (443 if scheme == "https" else 80)


def origin_text(url: str) -> str:
    scheme, host, port = url_origin(url)
    shown_host = f"[{host}]" if ":" in host else host
    default = port == (443 if scheme == "https" else 80)
    return f"{scheme}://{shown_host}" + ("" if default else f":{port}")


def missing_profile_error(
    name: str, source: str, path: Path, profiles: Mapping[str, object]
) -> ConfigError:
    origin = "" if source == "config file" else f" (from {source})"
    if not path.exists():
        return ConfigError(
            f"profile {name!r}{origin} is not defined: {path} does not exist",
            hint=f"create it with a [profiles.{name}] table holding base_url",
        )
    close = difflib.get_close_matches(name, list(profiles), n=1, cutoff=0.6)
    if close:
        advice = f"did you mean {close[0]!r}?"
    else:
        advice = "defined: " + (", ".join(sorted(profiles)) or "none")
    return ConfigError(f"profile {name!r}{origin} is not in {path} ({advice})")

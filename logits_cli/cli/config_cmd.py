"""``logits config show``: the resolved settings, where each came from, which backend."""

import typer

from logits_cli.cli.context import settings_for
from logits_cli.cli.failures import handle_errors
from logits_cli.cli.help_layout import CommandGroup
from logits_cli.cli.options import JsonOpt
from logits_cli.cli.output import Output
from logits_cli.cli.tables import Column
from logits_cli.config import Settings, mask_secret

app = CommandGroup(help="Inspect the configuration.", no_args_is_help=True)


def _api_key_display(settings: Settings) -> str | None:
    # The key command is never run here: showing where the key comes from is enough, and
    # running it could prompt a secret manager.
    if settings.api_key_value is not None:
        return mask_secret(settings.api_key_value)
    if settings.api_key_cmd is not None:
        return "(from a command)"
    return None


@app.command()
@handle_errors
def show(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """Show each setting, its value (secrets masked) and where it came from, and the
    config.toml it read (or would read: source "absent").

    Examples:

    \b
      logits config show
      LOGITS_PROFILE=team logits config show --json | jq -r .backend
    """
    out = Output(json_output=json_output)
    settings = settings_for(ctx)
    backend = (
        f"embedded (store in {settings.store_dir})"
        if settings.embedded
        else f"remote {settings.base_url}"
    )
    config_file = settings.config_file
    # The file this command read, or would read once it exists (in --home / $LOGITS_HOME).
    file_state = "read" if config_file.is_file() else "absent"
    values = {
        "home": str(settings.home),
        "base_url": settings.base_url,
        "profile": settings.profile,
        "api_key": _api_key_display(settings),
        "run": settings.run,
        "debug": "on" if settings.debug else "off",
    }
    if out.json:
        out.emit_json(
            {
                "backend": "embedded" if settings.embedded else "remote",
                "store_dir": str(settings.store_dir) if settings.embedded else None,
                "config_file": {"path": str(config_file), "exists": file_state == "read"},
                "settings": {
                    name: {"value": value, "source": settings.sources.get(name, "default")}
                    for name, value in values.items()
                },
            }
        )
        return
    rows = [
        {"setting": name, "value": value, "source": settings.sources.get(name, "default")}
        for name, value in values.items()
    ]
    rows.insert(1, {"setting": "config_file", "value": str(config_file), "source": file_state})
    rows.append({"setting": "backend", "value": backend, "source": "base_url"})
    out.emit_table(
        [Column("SETTING", "setting"), Column("VALUE", "value"), Column("SOURCE", "source")], rows
    )

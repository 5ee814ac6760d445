"""The import rules of docs/ARCHITECTURE.md §1, checked on the source (AST) and at run time.

Layers: ``api`` never imports ``cli``, ``typer`` or ``rich`` and never prints; ``cli`` never
imports ``httpx`` or ``click``, and only ``cli/server.py`` reaches ``server``/``store``,
lazily; ``server`` never imports ``cli``/``api``; ``store`` never imports ``server``, ``api``
or ``cli``. ``--help``, ``--version`` and completion import no heavy dependency.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "logits_cli"

FORBIDDEN = {
    "api": ("logits_cli.cli", "typer", "rich", "click"),
    "cli": ("httpx", "click", "typer._click"),
    "server": ("logits_cli.cli", "logits_cli.api", "typer", "rich", "click"),
    "store": ("logits_cli.server", "logits_cli.api", "logits_cli.cli", "typer", "rich"),
}


def imports_of(path: Path) -> list[tuple[str, bool]]:
    """(module, at module level) for every import in ``path``, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    inside = path.is_relative_to(PACKAGE.parent)  # else a test's probe: no relative imports
    package = (
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]) if inside else ""
    )
    top_level = {id(node) for node in tree.body}
    found: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, id(node) in top_level) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.append((base, id(node) in top_level))
            found.extend((f"{base}.{alias.name}", id(node) in top_level) for alias in node.names)
    return found


def matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_files(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports(layer: str) -> None:
    bad = [
        f"{path.relative_to(PACKAGE.parent)} imports {module}"
        for path in layer_files(layer)
        for module, _ in imports_of(path)
        for prefix in FORBIDDEN[layer]
        if matches(module, prefix)
    ]
    assert bad == []


def test_only_the_server_group_touches_server_and_store_and_lazily() -> None:
    bad = []
    for path in layer_files("cli"):
        for module, top_level in imports_of(path):
            if not any(matches(module, p) for p in ("logits_cli.server", "logits_cli.store")):
                continue
            if path.name != "server.py" or top_level:
                bad.append(f"{path.name} imports {module}")
    assert bad == []


def test_shared_modules_import_no_layer() -> None:
    shared = ("errors.py", "models.py", "uri.py", "config.py", "config_file.py", "diskio.py")
    for name in (*shared, "utc_text.py"):
        modules = [m for m, _ in imports_of(PACKAGE / name)]
        layers = ("logits_cli.api", "logits_cli.cli", "logits_cli.server", "logits_cli.store")
        assert not [m for m in modules if any(matches(m, p) for p in layers)], name


def test_api_never_prints() -> None:
    printing = [
        f"{path.name}:{node.lineno}"
        for path in layer_files("api")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "print"
    ]
    assert printing == []


HEAVY = ("httpx", "pydantic", "starlette", "uvicorn", "logits_cli.server", "logits_cli.store")
# Typer 0.29 coerces every non-flag parameter value through a pydantic TypeAdapter, so
# parsing any subcommand loads pydantic (typer/_coercion.py). Our own modules add nothing.
HEAVY_BUT_TYPER = tuple(m for m in HEAVY if m != "pydantic")

PROBE = """
import json, sys
from logits_cli.cli.main import main
heavy = json.loads(sys.argv[2])
sys.argv = ["logits", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit:
    pass
loaded = sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in heavy))
print(json.dumps(loaded), file=sys.stderr)
"""

COMPLETE_PATH = {
    "_LOGITS_COMPLETE": "complete_bash",
    "COMP_WORDS": "logits ckpt info ",
    "COMP_CWORD": "3",
}


@pytest.mark.parametrize(
    ("args", "env", "heavy"),
    [
        (["--help"], {}, HEAVY),
        (["--version"], {}, HEAVY),
        ([], {"_LOGITS_COMPLETE": "source_zsh"}, HEAVY),
        (["ckpt", "download", "--help"], {}, HEAVY_BUT_TYPER),
        ([], COMPLETE_PATH, HEAVY_BUT_TYPER),
    ],
    ids=["help", "version", "completion-script", "subcommand-help", "complete"],
)
def test_startup_imports_nothing_heavy(
    args: list[str], env: dict[str, str], heavy: tuple[str, ...]
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args), json.dumps(heavy)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )
    loaded = json.loads(done.stderr.strip().splitlines()[-1])
    assert loaded == []


# The transfer engine is handed what it needs (docs/ARCHITECTURE.md §1); it never reaches back
# into the client, lazily or not, so the client can import it without a circle.
ENGINE_MODULES = sorted(
    str(path.relative_to(PACKAGE / "api"))
    for path in [
        *(PACKAGE / "api" / "transfer").glob("*.py"),
        *(
            PACKAGE / "api" / name
            for name in ("download_options.py", "extract.py", "kernel_copy.py", "verify.py")
        ),
        *(
            PACKAGE / "api" / name
            for name in ("blob_direct.py", "limits.py", "transport_errors.py")
        ),
    ]
)


@pytest.mark.parametrize("module", ENGINE_MODULES)
def test_the_transfer_engine_never_imports_the_client(module: str) -> None:
    path = PACKAGE / "api" / module
    bad = [name for name, _ in imports_of(path) if matches(name, "logits_cli.api.client")]
    assert bad == [], f"{path.name} imports {bad}"


# -- the module graph: every import counted, lazy and under TYPE_CHECKING too -----------------


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported_names(path: Path) -> list[tuple[str, str | None]]:
    """(module of ours, name taken from it or None) for every import in ``path``, wherever it
    sits: at module level, in a function, under ``if TYPE_CHECKING``. ``from P import M``
    of a submodule M counts as importing P.M."""
    found: list[tuple[str, str | None]] = []
    for module, _ in imports_of(path):
        if module in MODULES:
            found.append((module, None))
        else:
            parent, _, name = module.rpartition(".")
            if parent in MODULES:
                found.append((parent, name))
    return found


def import_graph() -> dict[str, set[str]]:
    return {
        name: {target for target, _ in imported_names(path) if target != name}
        for name, path in MODULES.items()
    }


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return circles


# The engine folder is clean; the rest of the package is not yet (store/, server/, the
# client and its files workflow, cli/__init__), so both rules are checked on it alone.
ENGINE = {module_name(PACKAGE / "api" / module) for module in ENGINE_MODULES}


def test_the_module_graph_finds_a_circle_through_a_lazy_import(tmp_path: Path) -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_circles(graph) == [["a", "b", "c"]]
    lazy = tmp_path / "lazy.py"
    lazy.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from logits_cli.api.client import LogitsClient\n"
        "def f():\n    from logits_cli.api.transfer import fetcher\n"
    )
    assert ("logits_cli.api.client", "LogitsClient") in imported_names(lazy)
    assert ("logits_cli.api.transfer.fetcher", None) in imported_names(lazy)


def test_no_module_of_the_engine_is_in_an_import_circle() -> None:
    circles = [circle for circle in import_circles(import_graph()) if ENGINE & set(circle)]
    assert circles == []


def test_the_engine_imports_no_underscored_name_of_another_module() -> None:
    bad = [
        f"{name} imports {name_taken} from {target}"
        for name in sorted(ENGINE)
        for target, name_taken in imported_names(MODULES[name])
        if name_taken is not None
        and name_taken.startswith("_")
        and not name_taken.startswith("__")
        and target != name
    ]
    assert bad == []


# Serving exports (ckpt export, push-hf) convert with numpy and safetensors: the package never
# needs torch or its stack (tests/peft runs the cookbook and peft in the torch venv instead);
# huggingface_hub is the [hf] extra, imported only inside the functions that reach the Hub.
TORCH_STACK = ("torch", "transformers", "peft", "tinker_cookbook", "safetensors.torch")


def test_the_package_never_imports_torch_and_the_hub_only_lazily() -> None:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for module, top_level in imports_of(path):
            if any(matches(module, prefix) for prefix in TORCH_STACK):
                bad.append(f"{path.relative_to(PACKAGE.parent)} imports {module}")
            if matches(module, "huggingface_hub") and top_level:
                bad.append(f"{path.relative_to(PACKAGE.parent)} imports {module} at load")
    assert bad == []

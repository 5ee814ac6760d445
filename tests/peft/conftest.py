"""The CLI tests' fixtures (a run on the tiny model), for the export tests that save one."""

from tests.cli.conftest import cli, run  # noqa: F401

"""Flags whose defaults come from `PLEDGEWATCH_*` variables, and the CLI's usage error."""

from __future__ import annotations

import argparse
import os


class CliError(Exception):
    """A problem with the command's input, reported as one line and exit status 2."""


def _env(flag: str) -> str | None:
    return os.environ.get("PLEDGEWATCH_" + flag.lstrip("-").replace("-", "_").upper())


def option(parser: argparse.ArgumentParser, flag: str, **kwargs: object) -> None:
    """Add an option whose default comes from `PLEDGEWATCH_<FLAG>` when set."""
    env = _env(flag)
    if env is not None:
        kwargs["default"] = env
        kwargs.pop("required", None)
    parser.add_argument(flag, **kwargs)  # type: ignore[arg-type]  # argparse's kwargs are untyped


def flag(parser: argparse.ArgumentParser, flag: str, help_: str) -> None:
    """A boolean flag, also on when `PLEDGEWATCH_<FLAG>` is 1, true or yes."""
    env = (_env(flag) or "").strip().lower()
    parser.add_argument(flag, action="store_true", default=env in {"1", "true", "yes"}, help=help_)

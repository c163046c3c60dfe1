"""The lending flags of `run`, `replay` and `demo`: `--lending-config` and `--no-lending`."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli.options import CliError, flag, option
from lending.params import DEFAULT_PARAMS, LendingParams, ParamsError, parse_params


def load_lending(args: argparse.Namespace) -> LendingParams | None:
    """The lending parameters of `--lending-config` (the shipped defaults without it), or
    None with `--no-lending`."""
    if getattr(args, "no_lending", False):
        return None
    path = getattr(args, "lending_config", None)
    if not path:
        return DEFAULT_PARAMS
    try:
        return parse_params(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc
    except (ParamsError, UnicodeDecodeError) as exc:
        raise CliError(f"{path}: {exc}") from exc


def lending_options(parser: argparse.ArgumentParser) -> None:
    option(
        parser,
        "--lending-config",
        help="TOML file of lending parameters (risk, places, sites, collateral, price) "
        "overriding the defaults of lending/lending.toml",
    )
    flag(parser, "--no-lending", "run without the lending consumers (no risk, places, price)")

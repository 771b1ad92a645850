"""The verbs of ``jgw``, one module each; helpers they share for the config argument.

Every verb that works on a node takes the node's config file as its first positional argument,
``CONFIG``; left out, it is ``$JGW_CONFIG``, else ``/etc/jgw/jgw.toml`` (as rabbitmqctl and
postconf find theirs), so staff do not type it for every command.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import Config

DEFAULT_CONFIG = Path("/etc/jgw/jgw.toml")
CONFIG_HELP = "the node's config file (default: $JGW_CONFIG, else /etc/jgw/jgw.toml)"


def add_config_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", metavar="CONFIG", help=CONFIG_HELP)


def default_config() -> str:
    return os.environ.get("JGW_CONFIG") or str(DEFAULT_CONFIG)


def looks_like_config(text: str) -> bool:
    """Whether a first positional is the config file rather than the first message id."""
    return text.endswith(".toml") or "/" in text or os.path.isfile(text)


def config_path(args: argparse.Namespace, ids: str | None = None) -> str:
    """The config file this command works on. With ``ids`` (the name of a list of message ids
    that follows CONFIG), a first positional that is not a config file is the first id."""
    given: str | None = getattr(args, "config", None)
    if ids is not None and given is not None and not looks_like_config(given):
        getattr(args, ids).insert(0, given)
        given = None
    args.config = given or default_config()
    return str(args.config)


def load_config(args: argparse.Namespace, ids: str | None = None) -> Config:
    """Load the command's config (``config_path``). Missing file: exit 66, naming it."""
    from gateway import config as config_mod

    return config_mod.load(config_path(args, ids))

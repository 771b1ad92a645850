"""Shell completion and manual pages for ``jgw``, generated from its argparse parser at bundle build time.

NAME
    gen_docs - write bash and zsh completion (shtab) and the jgw(1) manual page (argparse-manpage)

SYNOPSIS
    python ops/bundle/gen_docs.py OUTDIR

DESCRIPTION
    Run by ``ops/bundle/build.sh`` with the build environment's Python, in which the freshly built jgw
    wheel and the build tools (``build-requirements.lock``) are installed. Writes
    ``OUTDIR/completion/jgw.bash``, ``OUTDIR/completion/_jgw`` (zsh) and ``OUTDIR/man/man1/jgw.1``;
    ``install.sh`` puts them where bash-completion, zsh and man look. shtab and argparse-manpage are
    build tools only: the appliance never imports them. The output depends only on the parser and on
    ``SOURCE_DATE_EPOCH`` (the manual page's date), so two builds of one commit write the same bytes.

Security: imports jgw's command-line parser and writes three text files; reads no configuration.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def build(out: Path) -> list[Path]:
    """Write the completion scripts and the manual page under ``out``; return the paths written."""
    os.environ["COLUMNS"] = "80"  # argparse wraps help to the terminal width: make it fixed
    import shtab
    from argparse_manpage.manpage import Manpage

    from gateway import __version__
    from gateway.cli import build_parser

    written: list[Path] = []

    def write(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        written.append(path)

    write(out / "completion" / "jgw.bash", shtab.complete(_completable(build_parser()), shell="bash"))
    write(out / "completion" / "_jgw", shtab.complete(_completable(build_parser()), shell="zsh"))
    page = Manpage(build_parser(), _data={
        "project_name": "jgw", "version": __version__, "manual_title": "jgw manual", "manual_section": 1,
        "description": "hardened store-and-forward message gateway for municipal closed networks",
    })
    write(out / "man" / "man1" / "jgw.1", str(page))
    return written


def _completable(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The parser with its verbs visible to shtab: ``jgw --help`` hides the argparse list of verbs
    (the overview lists each once, grouped by task), and shtab leaves out what help hides."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            action.help = None
    return parser


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="write jgw's shell completion and manual page")
    p.add_argument("out", type=Path, help="directory (the bundle's share/)")
    args = p.parse_args(argv)
    for path in build(args.out):
        print(f"gen_docs: wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The documentation site builds with --strict (broken links fail), and its CLI reference,
generated from the parser, lists every subcommand and option the parser has."""

from __future__ import annotations

import argparse
import html
import os
import re
from pathlib import Path

from mkdocs.commands.build import build
from mkdocs.config import load_config

from transferkit.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _subcommands(parser: argparse.ArgumentParser, prefix: str = "transferkit"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", sub
                yield from _subcommands(sub, f"{prefix} {name}")


def _text(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


def test_site_builds_strict_with_every_command_and_option(tmp_path):
    site = tmp_path / "site"
    # In process: the hook's import of transferkit.cli is this process's, already loaded.
    os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")
    build(load_config(str(ROOT / "mkdocs.yml"), site_dir=str(site), strict=True))

    page = (site / "cli" / "index.html").read_text()
    # One section per subcommand, each opened by an <h2> naming the command line.
    sections = {}
    for chunk in page.split("<h2 ")[1:]:
        heading = re.search(r"<code>(.*?)</code>", chunk)
        sections[_text(heading.group(1))] = _text(chunk)
    commands = dict(_subcommands(build_parser()))
    assert {"transferkit train", "transferkit inspect dream"} <= set(commands)
    assert set(commands) <= set(sections), set(commands) - set(sections)
    for line, parser in commands.items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            names = action.option_strings or [action.metavar or action.dest]
            for name in names:
                if isinstance(name, str):
                    assert name in sections[line], f"{line}: {name} missing from the reference"
            if action.help:  # as --help prints it; Markdown renders `code` without backticks
                help_text = parser._get_formatter()._expand_help(action).replace("`", "")
                assert " ".join(help_text.split()) in sections[line], (line, help_text)

    assert (site / "measurements" / "index.html").is_file()
    assert (site / "api" / "index.html").read_text().count("transferkit.run.Run") > 0

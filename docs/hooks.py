"""MkDocs hook: the CLI reference (docs/cli.md) is generated from transferkit's own parser.

`<!-- cli-reference -->` in cli.md is replaced, at build time, by every subcommand of
`transferkit.cli.build_parser()` (nested ones too: `inspect`'s views), each with its
usage and a table of its options and their help. Nothing of it is written by hand.
"""

from __future__ import annotations

import argparse
import os

MARKER = "<!-- cli-reference -->"


def commands(parser: argparse.ArgumentParser, prefix: str = "transferkit"):
    """Yields (command line, parser, help) for every subcommand, depth first.

    Args:
        parser: An argparse parser.
        prefix: The command line that reaches `parser`.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", sub, helps.get(name) or ""
                yield from commands(sub, f"{prefix} {name}")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render(parser: argparse.ArgumentParser) -> str:
    """The reference of every subcommand of `parser`, as Markdown."""
    out = []
    for line, sub, help_ in commands(parser):
        formatter = sub._get_formatter()
        out += [f"## `{line}`", "", _cell(help_ or sub.description or ""), "",
                "```", sub.format_usage().strip(), "```", ""]
        rows = [a for a in sub._actions if a.help != argparse.SUPPRESS
                and not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]
        if rows:
            out += ["| argument | help | default |", "| --- | --- | --- |"]
            for a in rows:
                invocation = formatter._format_action_invocation(a)
                default = "" if a.default in (None, argparse.SUPPRESS) or a.nargs == 0 or \
                    not a.option_strings else f"`{a.default}`"
                help_text = formatter._expand_help(a) if a.help else ""
                out.append(f"| `{_cell(invocation)}` | {_cell(help_text)} | {default} |")
            out.append("")
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from transferkit.cli import build_parser

    return markdown.replace(MARKER, render(build_parser()))

"""A Griffe extension for the API reference: the reST markup of ella's docstrings, in Markdown.

ella's docstrings are Google-style (``Args:``, ``Returns:``, ``Raises:``) with a few reST constructs in their prose.
Once the package is loaded, every docstring is rewritten before mkdocstrings parses it:

* roles such as ``:class:`~ella.kernels.Kernel``` become cross-references (optional ones: a name that is not in the
  reference renders as code, without a warning); ``~`` keeps the last component as the title, as in Sphinx;
* a paragraph ending in ``::`` (a reST literal block) ends in ``:``, and a lone ``::`` line is dropped; the indented
  block after it is a Markdown code block already;
* simple reST tables (``=====  =====`` borders) become Markdown tables.
"""

from __future__ import annotations

import html
import re

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|obj|exc|const):`(?P<text>[^`]+)`")
BORDER = re.compile(r"^\s*=+(\s+=+)+\s*$")


def _target(obj: griffe.Object, name: str) -> str:
    """The full path of ``name`` as seen from ``obj``'s scope; ``name`` itself if it cannot be resolved."""
    if name.startswith("ella.") or name == "ella":
        return name
    first, _, rest = name.partition(".")
    scope = obj
    while scope is not None:
        try:
            path = scope.resolve(first)
        except (griffe.NameResolutionError, AttributeError, KeyError):
            scope = scope.parent
            continue
        return f"{path}.{rest}" if rest else path
    return name


def _role(obj: griffe.Object, match: re.Match) -> str:
    text = match["text"].strip()
    short = text.startswith("~")
    name = text.lstrip("~.")
    call = name.endswith("()")
    name = name.removesuffix("()")
    title = (name.rsplit(".", 1)[-1] if short else name) + ("()" if call else "")
    identifier = html.escape(_target(obj, name), quote=True)
    return f'<autoref identifier="{identifier}" optional><code>{html.escape(title)}</code></autoref>'


def _table(lines: list[str]) -> list[str]:
    """A simple reST table (three borders: top, under the header, bottom) as a Markdown table."""
    border = lines[0]
    spans, start = [], None
    for i, char in enumerate(border + " "):
        if char == "=" and start is None:
            start = i
        elif char != "=" and start is not None:
            spans.append((start, i))
            start = None
    rows = []
    for line in lines:
        if BORDER.match(line) or not line.strip():
            continue
        cells = []
        for j, (lo, _) in enumerate(spans):
            hi = spans[j + 1][0] if j + 1 < len(spans) else None
            cells.append(line[lo:hi].strip())
        rows.append(cells)
    if not rows:
        return lines
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(spans)]
    out += ["| " + " | ".join(cells) + " |" for cells in rows[1:]]
    return out


def convert(obj: griffe.Object, text: str) -> str:
    """``text`` (a docstring of ``obj``) with its reST markup turned into Markdown."""
    lines = text.split("\n")
    out: list[str] = []
    literal_indent = None  # inside a literal block: the indentation of the line that opened it
    i = 0
    while i < len(lines):
        line = lines[i]
        indent = len(line) - len(line.lstrip())
        if literal_indent is not None and (not line.strip() or indent > literal_indent):
            out.append(line)
            i += 1
            continue
        literal_indent = None
        if BORDER.match(line):  # a simple table runs to its third border
            borders, j = 0, i
            while j < len(lines) and borders < 3:
                borders += bool(BORDER.match(lines[j]))
                j += 1
            if borders == 3:
                out += [ROLE.sub(lambda m: _role(obj, m), row) for row in _table(lines[i:j])]
                i = j
                continue
        if line.rstrip().endswith("::"):
            literal_indent = indent
            stripped = line.rstrip()[:-2].rstrip()
            line = stripped + ":" if stripped else ""
        out.append(ROLE.sub(lambda m: _role(obj, m), line))
        i += 1
    return "\n".join(out)


class RstMarkup(griffe.Extension):
    """Rewrite the reST markup of every docstring of a package once it is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        seen: set[int] = set()

        def visit(obj: griffe.Object) -> None:
            if id(obj) in seen:
                return
            seen.add(id(obj))
            if obj.docstring is not None:
                obj.docstring.value = convert(obj, obj.docstring.value)
            for member in obj.members.values():
                if not member.is_alias:
                    visit(member)

        visit(pkg)

"""MkDocs hook for the manual's API pages.

The docstrings use Sphinx roles (:class:`~onnxcam.Explainer`, :func:`...`), which Markdown
leaves as text. Each role becomes an optional cross-reference, resolved by mkdocs-autorefs
where the object has a page and shown as plain code where it has none (a bare relative name is
always plain code); a reStructuredText ``::`` before a code block becomes ``:``. Used by
mkdocs.yml only; not part of any package.
"""
from __future__ import annotations

import re

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj):<code>(~?)([^<]+?)</code>")
LITERAL = re.compile(r"::</p>")


def _reference(match: re.Match) -> str:
    short, target = match.group(1), match.group(2).strip()
    identifier = target.lstrip(".").removesuffix("()")
    shown = target.rsplit(".", 1)[-1] if short else target
    if "." not in identifier:  # a name relative to the docstring's object: nothing to resolve it by
        return f"<code>{shown}</code>"
    return f'<autoref identifier="{identifier}" optional><code>{shown}</code></autoref>'


def on_page_content(html: str, **kwargs) -> str:
    return LITERAL.sub(":</p>", ROLE.sub(_reference, html))

"""Griffe extension: render the Sphinx roles of our numpydoc docstrings as links.

The code base follows numpydoc and writes cross-references as Sphinx roles
(``:class:`~agnostic_saliency.backend.Backend```), which Markdown would show
verbatim. After a package is loaded, every role becomes an optional autorefs link:
a link when the target is documented on the site, plain code otherwise (never a
warning). A leading ``~`` shows the last component only, as in Sphinx.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Alias, Extension, Object

_ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|obj|exc):`(?P<tilde>~?)(?P<target>[^`]+)`")


class SphinxRoles(Extension):
    """Rewrite ``:role:`target``` into ``<autoref optional>`` tags after loading."""

    def on_package(self, *, pkg: Object, **kwargs: Any) -> None:
        self._rewrite(pkg, seen=set())

    def _rewrite(self, obj: Object, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(lambda match: _link(obj, match), obj.docstring.value)
        for member in obj.members.values():
            if not isinstance(member, Alias):
                self._rewrite(member, seen)


def _link(obj: Object, match: re.Match[str]) -> str:
    target = match["target"].strip()
    shown = target.rsplit(".", 1)[-1] if match["tilde"] else target.lstrip(".")
    identifier = _resolve(obj, target)
    if identifier is None:
        return f"<code>{shown}</code>"
    return f'<autoref identifier="{identifier}" optional><code>{shown}</code></autoref>'


def _resolve(obj: Object, target: str) -> str | None:
    """The full path of ``target`` as seen from ``obj``, or None if it cannot be told."""
    if target.startswith("."):
        return None
    head, _, rest = target.partition(".")
    if head.startswith("agnostic_saliency") or (rest and head in ("numpy", "sys")):
        return target  # already a full path
    try:
        resolved = obj.resolve(head)
    except Exception:  # griffe.NameResolutionError, or an alias it cannot follow
        return None
    return f"{resolved}.{rest}" if rest else resolved

"""A griffe extension for the API pages: the house's docstrings read as Markdown the way they are meant.

- Array shapes stay text: the docstrings give shapes in square brackets (``h [n, H]``,
  ``[h, z] [n, H + 1]``), and Markdown reads two bracketed groups separated by a space as a reference
  link ``[text] [id]``, which renders mangled and fails the strict build as a missing cross-reference.
  The second bracket of such a pair is escaped; a cross-reference written on purpose (``[text][id]``,
  no space) is left alone.
- reST roles (``:func:`name```, ``:class:``, ``:meth:``, ``:mod:``, ``:data:``, ...) become plain code:
  Markdown has no roles, and the name alone is what the reader needs.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

PAIR = re.compile(r"\](\s+)\[")
ROLE = re.compile(r":[a-z]+:(`)")


class HouseDocstrings(griffe.Extension):
    """Rewrite every docstring griffe loads: shapes stay text, reST roles become code."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite ``obj``'s docstring in place (griffe calls this for every module, class, function, attribute)."""
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(r"\1", PAIR.sub(r"]\1\\[", obj.docstring.value))

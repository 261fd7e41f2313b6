"""A griffe extension for the API pages: array shapes in docstrings stay text, not Markdown links.

The docstrings give shapes in square brackets (``h [n, H]``, ``[h, z] [n, H + 1]``); Markdown reads two
bracketed groups separated by a space as a reference link ``[text] [id]``, which then renders mangled and
fails the strict build as a missing cross-reference. The second bracket of such a pair is escaped. A
cross-reference written on purpose (``[text][id]``, no space) is left alone.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

PAIR = re.compile(r"\](\s+)\[")


class ShapeBrackets(griffe.Extension):
    """Escape ``] [`` in every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite ``obj``'s docstring in place (griffe calls this for every module, class, function, attribute)."""
        if obj.docstring is not None:
            obj.docstring.value = PAIR.sub(r"]\1\\[", obj.docstring.value)

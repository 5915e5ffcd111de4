"""The spellings that differ between the transformers releases sketchmind supports (``transformers>=5.20``).

Kept apart from ``models`` and ``latent`` so that both can use it without importing each other, and free of
torch and transformers imports.
"""

from __future__ import annotations

import inspect
from typing import Any


def cache_keyword(forward: Any) -> str:
    """The name under which ``forward`` takes (and its output returns) the KV cache.

    transformers 5 renamed ``past_key_values`` to ``cache``; the old name still works but warns on every
    call. Asking the signature keeps the warning away on new versions and older 5.x releases working.
    """
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"

"""The canonical spec string of a dataset (`Dataset.spec`): what every reader writes back.

Apart from the parser in `specs`, so readers can name themselves without importing it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["format_spec"]


def format_spec(kind: str, parts: list[str | None], options: dict[str, Any] | None = None) -> str:
    """Canonical spec string: ``kind:part[:part]`` and sorted ``?key=val&...`` when set."""
    text = f"{kind}:" + ":".join(str(p) for p in parts if p is not None)
    options = {k: v for k, v in (options or {}).items() if v is not None}
    if options:
        text += "?" + "&".join(f"{k}={_format_value(options[k])}" for k in sorted(options))
    return text


def _format_value(value: Any) -> str:
    return "none" if value is None else str(value)

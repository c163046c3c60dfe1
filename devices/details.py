"""How reject details show a bad value: its JSON type, or its repr shortened."""

from __future__ import annotations

from typing import Final

SHOWN_CHARS: Final = 60
_JSON_TYPES: Final[dict[type, str]] = {
    type(None): "null",
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
}


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


def clip(text: str) -> str:
    """Shorten a text for a detail message."""
    if len(text) > SHOWN_CHARS:
        return f"{text[:SHOWN_CHARS]}... ({len(text)} chars)"
    return text


def show(value: object) -> str:
    """`repr` of a value for a detail message, shortened; never raises."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - e.g. an int over the str-conversion digit limit
        return f"<{json_type(value)}>"
    return clip(text)

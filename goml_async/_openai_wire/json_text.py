"""JSON text as the wire writes it: compact separators, raw UTF-8, one line."""

from __future__ import annotations

import json
import json.encoder
from typing import Final

__all__ = ["NULL", "dumps", "json_string"]

# One encoder made once: json.dumps with non-default arguments builds a new JSONEncoder on every
# call, which is most of its cost for the small values a chunk holds.
_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

#: A JSON string literal for a str, exactly as :func:`dumps` writes it, from the C encoder
#: directly: the one JSON value every streamed token needs.
json_string: Final = json.encoder.encode_basestring

NULL: Final = "null"


def dumps(value: object) -> str:
    """Compact JSON with raw UTF-8 text, on one line (control characters are escaped).

    Example:
        >>> dumps({"text": "é\\n", "n": [1, None]})
        '{"text":"é\\\\n","n":[1,null]}'
    """
    return _ENCODER.encode(value)

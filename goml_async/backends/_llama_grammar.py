"""Structured output on llama-server: its own ``json_schema`` and ``grammar`` request fields.

llama.cpp turns a JSON schema into a GBNF grammar (common/json-schema-to-grammar.cpp) and
silently ignores what that converter does not implement. So before a schema is sent,
:func:`check_schema` walks it and rejects, naming it, every keyword the converter would drop
(``multipleOf``, ``uniqueItems``, ``not``, ``minimum`` on a ``number``, ...): a schema is
enforced by the server in full or not sent. ``regex`` and ``choice`` formats become a GBNF
grammar built here; :func:`regex_to_gbnf` converts a documented subset of regular expressions
and rejects the rest. The stream checker still checks every streamed byte.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from ..structured import ResponseFormat

__all__ = ["check_schema", "choice_to_gbnf", "constraint_fields", "regex_to_gbnf"]

_SCHEMA = "response_format.json_schema.schema"
_PATTERN = "response_format.pattern"
#: What llama.cpp's converter enforces (under the conditions checked in _check_node).
_ENFORCED = frozenset(
    [
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "enum",
        "const",
        "anyOf",
        "oneOf",
        "$ref",
        "$defs",
        "definitions",
        "pattern",
        "format",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
    ]
)
#: Standard JSON Schema keywords the converter drops: never sent to the server.
_DROPPED = frozenset(
    [
        "allOf",
        "not",
        "if",
        "then",
        "else",
        "patternProperties",
        "propertyNames",
        "dependentRequired",
        "dependentSchemas",
        "minProperties",
        "maxProperties",
        "contains",
        "minContains",
        "maxContains",
        "uniqueItems",
        "multipleOf",
        "unevaluatedProperties",
        "unevaluatedItems",
        "additionalItems",
        "$anchor",
        "$dynamicRef",
        "$dynamicAnchor",
        "$recursiveRef",
        "dependencies",
    ]
)
_FORMATS = frozenset(("date", "time", "date-time", "uuid", *(f"uuid{n}" for n in range(1, 6))))
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def constraint_fields(fmt: ResponseFormat) -> dict[str, Any]:
    """The llama-server request fields that enforce ``fmt`` (``json_schema`` or ``grammar``)."""
    if fmt.type == "json_object":
        return {"json_schema": {"type": "object"}}
    if fmt.type == "json_schema":
        check_schema(fmt)
        return {"json_schema": fmt.schema}
    if fmt.type == "choice":
        return {"grammar": choice_to_gbnf(fmt.choices)}
    return {"grammar": regex_to_gbnf(fmt.pattern)}


@functools.lru_cache(maxsize=256)
def check_schema(fmt: ResponseFormat) -> None:
    """Reject the schema of ``fmt`` unless llama.cpp's converter enforces all of it.

    Raises:
        ConfigError: naming the first keyword (and its place) the server would ignore.
    """
    pending: list[tuple[object, str]] = [(fmt.schema, _SCHEMA)]
    while pending:
        node, path = pending.pop()
        if isinstance(node, bool):
            continue
        if not isinstance(node, Mapping):
            raise ConfigError(path, "must be a schema object")
        pending.extend(_check_node(node, path))


def _check_node(node: Mapping[str, Any], path: str) -> list[tuple[object, str]]:
    def refuse(keyword: str, why: str) -> ConfigError:
        return ConfigError(f"{path}.{keyword}", f"llama.cpp's grammar cannot enforce {why}")

    keys = set(node)
    for keyword in sorted(keys & _DROPPED):
        raise refuse(keyword, f"the JSON schema keyword {keyword!r}")
    kind = node.get("type")
    structural = keys & _ENFORCED - {"$defs", "definitions"}
    for combinator in ("$ref", "anyOf", "oneOf"):
        if combinator in keys and structural - {combinator}:
            other = sorted(structural - {combinator})[0]
            raise refuse(other, f"{other!r} beside {combinator!r} (it would be ignored)")
    if "$ref" in keys and not str(node["$ref"]).startswith("#/"):
        raise refuse("$ref", f"the non-local reference {node['$ref']!r}")
    if "pattern" in keys:
        pattern = node["pattern"]
        if not (isinstance(pattern, str) and pattern.startswith("^") and pattern.endswith("$")):
            raise refuse("pattern", "a pattern that does not start with '^' and end with '$'")
        for other in ("format", "minLength", "maxLength"):
            if other in keys:
                raise refuse(other, f"{other!r} beside 'pattern' (it would be ignored)")
    if "format" in keys:
        if node["format"] not in _FORMATS:
            raise refuse(
                "format", f"the format {node['format']!r} (only {', '.join(sorted(_FORMATS))})"
            )
        for other in ("minLength", "maxLength"):
            if other in keys:
                raise refuse(other, f"{other!r} beside 'format' (it would be ignored)")
    # With a list of types the converter checks each type on its own: a keyword holds when the
    # one type it constrains is named (and, for bounds, "number" is not, which would drop them).
    types = set(kind) if isinstance(kind, list) else {kind}
    for other in ("minLength", "maxLength"):
        if other in keys and "string" not in types:
            raise refuse(other, f'{other!r} without "type": "string"')
    for other in _BOUNDS:
        if other in keys and ("integer" not in types or "number" in types):
            raise refuse(other, f"{other!r} on anything but an integer")
    for other in ("minItems", "maxItems"):
        if other in keys and "items" not in keys:
            raise refuse(other, f"{other!r} without 'items'")
    if "items" in keys and "prefixItems" in keys:
        raise refuse("prefixItems", "'prefixItems' beside 'items'")
    children: list[tuple[object, str]] = []
    for name in ("properties", "$defs", "definitions"):
        for key, value in (node.get(name) or {}).items():
            children.append((value, f"{path}.{name}.{key}"))
    for name in ("anyOf", "oneOf", "prefixItems"):
        for index, value in enumerate(node.get(name) or ()):
            children.append((value, f"{path}.{name}[{index}]"))
    items = node.get("items")
    if isinstance(items, list):
        children.extend((value, f"{path}.items[{index}]") for index, value in enumerate(items))
    elif items is not None:
        children.append((items, f"{path}.items"))
    additional = node.get("additionalProperties")
    if isinstance(additional, Mapping):
        children.append((additional, f"{path}.additionalProperties"))
    return children


# -- GBNF -----------------------------------------------------------------------------------------


def _char(char: str) -> str:
    """One character as a GBNF literal/class element: ASCII punctuation as a hex escape."""
    if char.isascii() and not char.isalnum():
        return f"\\x{ord(char):02X}"
    return char


def _literal(text: str) -> str:
    return '"' + "".join(_char(char) for char in text) + '"'


def choice_to_gbnf(choices: tuple[str, ...]) -> str:
    """A GBNF grammar whose language is exactly ``choices``."""
    return "root ::= " + " | ".join(_literal(choice) for choice in choices) + "\n"


#: The escapes of the regex subset, as GBNF class contents.
_CLASS_ESCAPES = {"d": "0-9", "w": "a-zA-Z0-9_", "s": " \\x09\\x0A\\x0D\\x0C\\x0B"}
_CHAR_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v"}
_MAX_REPEAT = 1000


@functools.lru_cache(maxsize=256)
def regex_to_gbnf(pattern: str) -> str:
    """A GBNF grammar matching exactly the strings ``pattern`` matches as a whole.

    The subset: literal characters, ``.`` (any character but a newline), escaped punctuation,
    ``\\n \\t \\r \\f \\v``, ``\\d \\w \\s`` (ASCII), classes ``[...]`` and ``[^...]``
    with ranges (``\\d \\w \\s`` only in positive ones), groups ``(...)`` and ``(?:...)``,
    ``|``, and the greedy quantifiers ``* + ? {n} {n,} {n,m}`` (n, m <= 1000).

    Raises:
        ConfigError: the pattern uses anything else (anchors, look-around, back-references,
            lazy quantifiers, flags, named groups, ``\\b``, ``\\p``, ``\\D``, ...).
    """
    return "root ::= " + _RegexParser(pattern).parse() + "\n"


class _RegexParser:
    def __init__(self, pattern: str) -> None:
        self.text = pattern
        self.pos = 0

    def fail(self, what: str) -> ConfigError:
        return ConfigError(
            _PATTERN,
            f"{what} at position {self.pos} is outside the regex subset llama.cpp grammars "
            "are built from (see the structured output guide)",
        )

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def parse(self) -> str:
        result = self.alternation()
        if self.pos != len(self.text):
            raise self.fail(f"an unmatched {self.peek()!r}")
        return result

    def alternation(self) -> str:
        branches = [self.sequence()]
        while self.peek() == "|":
            self.pos += 1
            branches.append(self.sequence())
        return " | ".join(branch or '""' for branch in branches)

    def sequence(self) -> str:
        items: list[str] = []
        while self.peek() and self.peek() not in "|)":
            atom = self.atom()
            items.append(atom + self.quantifier())
        return " ".join(items)

    def atom(self) -> str:
        char = self.peek()
        self.pos += 1
        if char == "(":
            if self.text.startswith("?:", self.pos):
                self.pos += 2
            elif self.peek() == "?":
                raise self.fail("a group with '(?'")
            inner = self.alternation()
            if self.peek() != ")":
                raise self.fail("an unclosed group")
            self.pos += 1
            return f"({inner or chr(34) * 2})"
        if char == "[":
            return self.char_class()
        if char == ".":
            return "[^\\x0A]"
        if char == "\\":
            return self.escape(in_class=False)
        if char in "^$":
            raise self.fail(f"the anchor {char!r} (the pattern always matches the whole output)")
        if char in "*+?{":
            raise self.fail(f"a quantifier {char!r} with nothing to repeat")
        return _literal(char)

    def escape(self, *, in_class: bool) -> str:
        char = self.peek()
        self.pos += 1
        if char in _CLASS_ESCAPES:
            return _CLASS_ESCAPES[char] if in_class else f"[{_CLASS_ESCAPES[char]}]"
        if char in _CHAR_ESCAPES:
            return _char(_CHAR_ESCAPES[char]) if in_class else _literal(_CHAR_ESCAPES[char])
        if char and char.isascii() and not char.isalnum():
            return _char(char) if in_class else _literal(char)
        raise self.fail(f"the escape '\\{char}'")

    def char_class(self) -> str:
        negated = self.peek() == "^"
        if negated:
            self.pos += 1
        parts: list[str] = []
        first = True
        while True:
            char = self.peek()
            if not char:
                raise self.fail("an unclosed class")
            if char == "]" and not first:
                self.pos += 1
                break
            first = False
            if char == "[":
                raise self.fail("a nested class or '[' in a class")
            if char == "\\":
                self.pos += 1
                if negated and self.peek() in _CLASS_ESCAPES:
                    raise self.fail(f"'\\{self.peek()}' in a negated class")
                parts.append(self.escape(in_class=True))
                continue
            self.pos += 1
            if self.peek() == "-" and self.text[self.pos + 1 : self.pos + 2] not in ("]", ""):
                self.pos += 1
                end = self.peek()
                if end in "\\[":
                    raise self.fail("a range ending in an escape")
                self.pos += 1
                if ord(end) < ord(char):
                    raise self.fail(f"the reversed range {char}-{end}")
                parts.append(f"{_char(char)}-{_char(end)}")
            else:
                parts.append(_char(char))
        return "[" + ("^" if negated else "") + "".join(parts) + "]"

    def quantifier(self) -> str:
        char = self.peek()
        if char in ("*", "+", "?") and char:
            self.pos += 1
            result = char
        elif char == "{":
            close = self.text.find("}", self.pos)
            body = self.text[self.pos + 1 : close] if close > 0 else ""
            low, _, high = body.partition(",")
            if not low.isdigit() or (high and not high.isdigit()):
                raise self.fail(f"the repetition {{{body}}}")
            if int(low) > _MAX_REPEAT or (high and int(high) > _MAX_REPEAT):
                raise self.fail(f"a repetition over {_MAX_REPEAT}")
            if high and int(high) < int(low):
                raise self.fail(f"the repetition {{{body}}} (max < min)")
            self.pos = close + 1
            result = "{" + body + "}"
        else:
            return ""
        if self.peek() in ("?", "+", "*", "{") and self.peek():
            raise self.fail("a lazy, possessive or stacked quantifier")
        return result

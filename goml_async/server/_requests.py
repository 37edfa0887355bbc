"""Validation of ``/v1/chat/completions`` and ``/v1/completions`` request bodies, without I/O.

Every field is checked for its type and range with a 400 that names the OpenAI parameter, so
no value a client sends reaches the model unchecked (none can cause a 500). Fields this server
cannot honour are refused with a 400 naming them (code ``not_supported``) rather than ignored:
a reply must never look as if it did what was asked when it did not. ``response_format`` is
validated and compiled here (a malformed or unenforceable one is a 400 naming the field, before
the request waits in line); whether the model can enforce it is the model's check, when the
stream opens. ``tools`` and ``tool_choice`` (chat only) are checked by the same validation as
``chat(tools=...)`` (:func:`~goml_async.tools.normalize_tools`), and messages may be ``tool``
results and assistant messages with ``tool_calls``. Fields that do not change
the generated text (``user``, ``metadata``, ...) and fields this server does not know are
ignored, as OpenAI-compatible servers do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ..errors import ConfigError
from ..structured import ResponseFormat, grammar_for, normalize_response_format
from ..tools import normalize_tool_choice, normalize_tools
from ..types import MAX_TOP_LOGPROBS, Message, Role
from ._wire import ServerError, shown

__all__ = [
    "MAX_COMPLETION_LOGPROBS",
    "MAX_STOPS",
    "MAX_STOP_CHARS",
    "CompletionRequest",
    "parse_completion_request",
]

#: The most stop sequences one request may give.
MAX_STOPS: Final = 16
#: The longest stop sequence, in characters (OpenAI documents no limit; 1024 is far beyond any
#: real stop and keeps the stop matcher's work per token small).
MAX_STOP_CHARS: Final = 1024
#: The most ``logprobs`` alternatives the legacy completions API allows (OpenAI's limit).
MAX_COMPLETION_LOGPROBS: Final = 5

#: Request roles accepted in ``messages`` and the role they become (``developer`` is OpenAI's
#: newer name for ``system``).
_ROLES: Final[dict[str, Role]] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """A validated ``/v1/chat/completions`` or ``/v1/completions`` request.

    Attributes:
        chat: True for chat completions.
        model: the requested model ("" when omitted).
        messages: the conversation (chat only).
        prompt: the prompt (completions only).
        stream: reply with Server-Sent Events.
        include_usage: ``stream_options.include_usage``: send a usage chunk before ``[DONE]``.
        max_tokens: ``max_tokens`` (or ``max_completion_tokens``); None when not given.
        logprobs: None when no log-probabilities were asked for; else how many alternatives
            per token (``top_logprobs``, or the completions API's ``logprobs``).
        options: the other sampling fields as GenerateConfig keyword options (with ``tools``
            and ``tool_choice``, validated, when tools were offered).
    """

    chat: bool
    model: str = ""
    messages: tuple[Message, ...] = ()
    prompt: str = ""
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    logprobs: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _bad(param: str, problem: str) -> ServerError:
    return ServerError(400, f"{param}: {problem}", param=param, code="invalid_value")


def _unsupported(param: str, what: str) -> ServerError:
    return ServerError(
        400, f"{param}: {what} is not supported by this server", param=param, code="not_supported"
    )


def _optional_int(body: Mapping[str, Any], name: str, *, minimum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_int(value) or value < minimum:
        raise _bad(name, f"must be an integer >= {minimum}, got {shown(value)}")
    return int(value)


def _optional_number(body: Mapping[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_number(value) or not low <= value <= high:
        raise _bad(name, f"must be a number between {low:g} and {high:g}, got {shown(value)}")
    return float(value)


def _optional_bool(body: Mapping[str, Any], name: str) -> bool | None:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise _bad(name, f"must be true or false, got {shown(value)}")
    return value


def _stops(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(item, str) for item in stops):
        raise _bad("stop", f"must be a string or a list of strings, got {shown(value)}")
    if len(stops) > MAX_STOPS:
        raise _bad("stop", f"at most {MAX_STOPS} stop sequences, got {len(stops)}")
    if any(not item for item in stops):
        raise _bad("stop", "stop sequences must not be empty strings")
    longest = max((len(item) for item in stops), default=0)
    if longest > MAX_STOP_CHARS:
        raise _bad(
            "stop", f"a stop sequence may have at most {MAX_STOP_CHARS} characters, got {longest}"
        )
    return tuple(stops)


def _content(value: object, index: int) -> str:
    """A message's content: a string, or a list of text parts (joined)."""
    param = f"messages[{index}].content"
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise _bad(param, f"only text content parts are supported, got {shown(kind)}")
            text = part.get("text")
            if not isinstance(text, str):
                raise _bad(param, "a text part needs a string 'text'")
            texts.append(text)
        return "".join(texts)
    raise _bad(param, f"must be a string or a list of text parts, got {type(value).__name__}")


def _messages(value: object) -> tuple[Message, ...]:
    if not isinstance(value, list) or not value:
        raise _bad("messages", "must be a non-empty list of {role, content} objects")
    messages = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise _bad(f"messages[{index}]", f"must be an object, got {type(item).__name__}")
        role = item.get("role")
        # isinstance first: a list or dict role is unhashable and cannot be looked up.
        if not isinstance(role, str) or role not in _ROLES:
            raise _bad(
                f"messages[{index}].role",
                f"must be one of system, developer, user, assistant, tool; got {shown(role)}",
            )
        content = item.get("content")
        if content is None and role == "assistant":
            content = ""
        try:
            message = Message(
                _ROLES[role],
                _content(content, index),
                tool_calls=item.get("tool_calls") or (),
                tool_call_id=item.get("tool_call_id"),
            )
        except ConfigError as exc:
            raise _bad(f"messages[{index}].{exc.field}", exc.problem) from None
        messages.append(message)
    return tuple(messages)


def _prompt(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return value[0]
    raise _bad("prompt", "must be a string (or a list holding exactly one string)")


def _refuse_unsupported(body: Mapping[str, Any], *, chat: bool) -> None:
    """400 for every field whose request this server cannot honour."""
    n = body.get("n")
    if n is not None and (not _is_int(n) or n != 1):
        raise _bad("n", f"only n=1 is supported, got {shown(n)}")
    if body.get("logit_bias") not in (None, {}):
        raise _unsupported("logit_bias", "logit_bias")
    if not chat:
        if body.get("echo") not in (None, False):
            raise _unsupported("echo", "echoing the prompt")
        best_of = body.get("best_of")
        if best_of is not None and (not _is_int(best_of) or best_of != 1):
            raise _unsupported("best_of", "best_of other than 1")
        if body.get("suffix") not in (None, ""):
            raise _unsupported("suffix", "a suffix (insertion)")
        if body.get("tools") not in (None, []):
            raise _unsupported("tools", "tool calling on /v1/completions (use chat completions)")
        if body.get("tool_choice") not in (None, "none", "auto"):
            raise _unsupported("tool_choice", "a tool_choice on /v1/completions")
        return
    # The legacy function-calling fields, which OpenAI replaced with tools.
    if body.get("functions") not in (None, []):
        raise _unsupported("functions", "function calling (send tools)")
    if body.get("function_call") not in (None, "none", "auto"):
        raise _unsupported("function_call", 'a function_call other than "none" or "auto"')
    if body.get("modalities") not in (None, ["text"]):
        raise _unsupported("modalities", "output other than text")
    for name, what in (
        ("audio", "audio output"),
        ("prediction", "predicted outputs"),
        ("web_search_options", "web search"),
    ):
        if body.get(name) is not None:
            raise _unsupported(name, what)


def _response_format(value: object) -> ResponseFormat | None:
    """The validated, compiled ``response_format`` (OpenAI's shapes and goml's regex/choice).

    Compiled here, not when the stream opens, so that a schema no grammar can enforce is a 400
    before the request waits for a place; the grammar is cached for the model's own check.
    """
    try:
        fmt = normalize_response_format(value)
        if fmt is not None:
            grammar_for(fmt, surrounding_whitespace=fmt.is_json)
    except ConfigError as exc:
        raise _bad(exc.field, exc.problem) from None
    return fmt


def _tools(body: Mapping[str, Any]) -> dict[str, Any]:
    """``tools`` and ``tool_choice`` as GenerateConfig options, validated as ``chat()`` does.

    Without tools, a ``tool_choice`` of ``none`` or ``auto`` asks for nothing and is dropped;
    ``required`` or a named function is a 400 (they need tools).
    """
    try:
        tools = normalize_tools(body.get("tools"))
        choice = normalize_tool_choice(body.get("tool_choice"), tools)
    except ConfigError as exc:
        raise _bad(exc.field, exc.problem) from None
    if not tools:
        return {}
    return {"tools": tools, "tool_choice": choice}


def _logprobs(body: Mapping[str, Any], *, chat: bool) -> int | None:
    """How many alternatives per token were asked for, or None when logprobs are off."""
    if not chat:  # the legacy API: logprobs is the number of alternatives, 0..5
        value = body.get("logprobs")
        if value is None:
            return None
        if not _is_int(value) or not 0 <= value <= MAX_COMPLETION_LOGPROBS:
            raise _bad(
                "logprobs",
                f"must be an integer between 0 and {MAX_COMPLETION_LOGPROBS}, got {shown(value)}",
            )
        return int(value)
    wanted = _optional_bool(body, "logprobs")
    top = body.get("top_logprobs")
    if top is not None and (not _is_int(top) or not 0 <= top <= MAX_TOP_LOGPROBS):
        raise _bad(
            "top_logprobs",
            f"must be an integer between 0 and {MAX_TOP_LOGPROBS}, got {shown(top)}",
        )
    if top and not wanted:
        raise _bad("top_logprobs", "needs logprobs: true")
    return int(top or 0) if wanted else None


def _sampling(body: Mapping[str, Any]) -> dict[str, Any]:
    """The sampling fields that were given, as GenerateConfig keyword options."""
    options: dict[str, Any] = {}
    numbers = (
        ("temperature", 0.0, 2.0),
        ("top_p", 0.0, 1.0),
        ("repeat_penalty", 0.0, 10.0),
        ("presence_penalty", -2.0, 2.0),
        ("frequency_penalty", -2.0, 2.0),
    )
    for name, low, high in numbers:
        number = _optional_number(body, name, low, high)
        if number is not None:
            options[name] = number
    for name in ("top_k", "seed"):
        integer = _optional_int(body, name, minimum=0)
        if integer is not None:
            options[name] = integer
    stops = _stops(body.get("stop"))
    if stops:
        options["stop_sequences"] = stops
    return options


def parse_completion_request(body: object, *, chat: bool) -> CompletionRequest:
    """Validate a decoded request body.

    Unknown fields are ignored, as OpenAI-compatible servers do. ``null`` counts as absent.

    Raises:
        ServerError: 400 naming the parameter that is wrong or cannot be honoured.
    """
    if not isinstance(body, dict):
        raise ServerError(400, "the request body must be a JSON object", code="invalid_json")
    model = body.get("model")
    if model is None:
        model = ""
    if not isinstance(model, str):
        raise _bad("model", f"must be a string, got {type(model).__name__}")
    stream = _optional_bool(body, "stream")
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise _bad("stream_options", "must be an object")
    include_usage = (stream_options or {}).get("include_usage")
    if include_usage is not None and not isinstance(include_usage, bool):
        raise _bad(
            "stream_options.include_usage", f"must be true or false, got {shown(include_usage)}"
        )
    _refuse_unsupported(body, chat=chat)
    max_tokens = _optional_int(body, "max_completion_tokens", minimum=0)
    if max_tokens is None:
        max_tokens = _optional_int(body, "max_tokens", minimum=0)
    options = _sampling(body)
    fmt = _response_format(body.get("response_format"))
    if fmt is not None:
        options["response_format"] = fmt
    if chat:
        options.update(_tools(body))
    logprobs = _logprobs(body, chat=chat)
    if logprobs is not None:
        options.update(logprobs=True, top_logprobs=logprobs)
    return CompletionRequest(
        chat=chat,
        model=model,
        messages=_messages(body.get("messages")) if chat else (),
        prompt="" if chat else _prompt(body.get("prompt")),
        stream=bool(stream),
        include_usage=bool(include_usage),
        max_tokens=max_tokens,
        logprobs=logprobs,
        options=options,
    )

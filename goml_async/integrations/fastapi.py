"""Stream a TokenStream from a FastAPI (or plain Starlette) endpoint as Server-Sent Events.

Two formats:

- :func:`openai_sse_response`: OpenAI's chunks (``chat.completion.chunk`` or
  ``text_completion``), ending with ``data: [DONE]``, so the official ``openai`` clients and
  goml_async's HTTP backend can read it;
- :func:`text_sse_response`: each token as ``data: <text>``, ready for a browser's
  ``EventSource`` (``onmessage``); the end is an ``event: done`` and a failure an
  ``event: error``.

A client that disconnects cancels the generation: the stream is closed, which stops the model
(the llama-server slot goes idle, the MLX thread stops). The status and headers go out with the
first token: a failure before it is answered with its own status and OpenAI's JSON error body, a
failure after it is sent as an error event; it is never dropped.

Needs Starlette (``pip install 'goml_async[server]'``); FastAPI itself is optional.

Example:
    ```python
    from fastapi import FastAPI
    from goml_async.integrations.fastapi import openai_sse_response

    app = FastAPI()

    @app.get("/story")
    async def story(topic: str):
        stream = app.state.model.chat([{"role": "user", "content": f"A story about {topic}"}])
        return openai_sse_response(stream, model="smollm2")
    ```
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import BackendUnavailable, ConfigError
from ..server.events import EventEncoder, OpenAIEncoder, TextEncoder
from ..server.sse import TokenStreamSender
from ..stream import TokenStream

try:
    from starlette.background import BackgroundTask
    from starlette.responses import Response
    from starlette.types import Receive, Scope, Send
except ModuleNotFoundError as exc:  # pragma: no cover - exercised without the extra
    raise BackendUnavailable(
        f"goml_async.integrations.fastapi needs Starlette ({exc.name} is not installed)",
        backend="server",
        install_hint="pip install 'goml_async[server]'",
    ) from exc

__all__ = ["TokenStreamResponse", "openai_sse_response", "text_sse_response"]


class TokenStreamResponse(Response):
    """A Starlette response that sends a TokenStream as Server-Sent Events.

    The stream starts when the response is sent and is closed when sending ends, however it
    ends (finished, failed, or the client went away).

    Args:
        stream: the tokens to send.
        encoder: the event format (``OpenAIEncoder`` or ``TextEncoder`` from
            ``goml_async.server.events``; the two helpers below pick one for you).
        status_code: the HTTP status.
        headers: extra response headers.
        background: a task run after the response was sent.

    Attributes:
        outcome: ``"completed"``, ``"error"``, ``"disconnected"`` or ``"stopped"`` once sent.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        stream: TokenStream,
        encoder: EventEncoder,
        *,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        if not isinstance(stream, TokenStream):
            raise ConfigError("stream", f"must be a TokenStream, got {type(stream).__name__}")
        self.stream = stream
        self.encoder = encoder
        self.status_code = status_code
        self.background = background
        self.outcome = "pending"
        self._extra = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in (headers or {}).items()
        ]
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sender = TokenStreamSender(
            self.stream, self.encoder, status=self.status_code, headers=self._extra
        )
        self.outcome = await sender(receive, send)
        if self.background is not None:
            await self.background()


def openai_sse_response(
    stream: TokenStream,
    *,
    model: str = "",
    chat: bool = True,
    include_usage: bool = True,
    headers: Mapping[str, str] | None = None,
) -> TokenStreamResponse:
    """The stream as OpenAI chunks: a role chunk (chat), one chunk per token, the
    finish_reason, the usage chunk (when ``include_usage``), then ``data: [DONE]``.

    Args:
        stream: from ``model.chat(...)`` (``chat=True``) or ``model.generate(...)``
            (``chat=False``: ``text_completion`` chunks).
        model: the model name in every chunk.
        chat: chat chunks or completion chunks.
        include_usage: send the usage chunk (the backend's own token counts).
        headers: extra response headers.
    """
    encoder = OpenAIEncoder(chat=chat, model=model, include_usage=include_usage)
    return TokenStreamResponse(stream, encoder, headers=headers)


def text_sse_response(
    stream: TokenStream, *, headers: Mapping[str, str] | None = None
) -> TokenStreamResponse:
    """The stream as plain text events: ``data: <token text>`` per token, then
    ``event: done`` (data: finish_reason and usage) or ``event: error`` (data: the error).
    """
    return TokenStreamResponse(stream, TextEncoder(), headers=headers)

"""ScriptedModel: an in-memory TextModel for tests and docs.

It is never registered as a backend and never chosen by default: it only says what it is told.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeAlias

import anyio

from ..errors import ConfigError, GenerationError, NotSupported
from ..model import BaseTextModel
from ..stream import StreamContext
from ..types import ClassifyResult, GenerateConfig, GenerateMetrics, Message, Token, TopLogprob

__all__ = ["Reply", "ScriptedModel"]

#: A fixed reply (a sequence of token texts), or a function of the prompt (for chat: the list
#: of Messages) that returns one.
Reply: TypeAlias = Sequence[str] | Callable[[str | list[Message]], Sequence[str]]


class ScriptedModel(BaseTextModel):
    """A TextModel that streams a scripted reply.

    Args:
        reply: the token texts to yield, or a callable that returns them for a prompt.
        delay: seconds awaited before each token.
        fail_after: after this many tokens, raise ``error`` instead of continuing.
        error: the exception raised by ``fail_after`` (default: a GenerationError).
        name: the model's ``model_type``.
        logprobs: the log-probability of each token of the reply, by position; without it,
            asking for ``logprobs`` raises NotSupported, as a backend that cannot do them does.
        top_logprobs: the most likely tokens at each position (most likely first), of which
            ``GenerateConfig.top_logprobs`` are given; without it, asking for any raises
            NotSupported.

    Attributes:
        calls: every call as ``(prompt_or_messages, GenerateConfig)``, in order.
        max_concurrency: the most streams that were open at once.

    Example:
        >>> import anyio
        >>> model = ScriptedModel(["Hello", ",", " world"])
        >>> anyio.run(lambda: model.generate("hi").collect()).text
        'Hello, world'
    """

    #: A scripted reply is not generated, so nothing constrains it; every format is accepted
    #: and the stream's checker holds the reply to it (a test sees SchemaViolation for a
    #: reply that breaks the format, as from a real backend).
    response_formats = frozenset(("json_object", "json_schema", "regex", "choice"))

    def __init__(
        self,
        reply: Reply,
        *,
        delay: float = 0.0,
        fail_after: int | None = None,
        error: BaseException | None = None,
        name: str = "scripted",
        logprobs: Sequence[float] | None = None,
        top_logprobs: Sequence[Sequence[TopLogprob]] | None = None,
    ) -> None:
        if not callable(reply):
            reply = self._check_reply(reply)
        if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
            raise ConfigError("delay", f"must be a number >= 0, got {delay!r}")
        if fail_after is not None and (
            isinstance(fail_after, bool) or not isinstance(fail_after, int) or fail_after < 0
        ):
            raise ConfigError("fail_after", f"must be an int >= 0 or None, got {fail_after!r}")
        if error is not None and not isinstance(error, BaseException):
            raise ConfigError("error", f"must be an exception instance, got {error!r}")
        if not isinstance(name, str) or not name:
            raise ConfigError("name", f"must be a non-empty str, got {name!r}")
        if logprobs is not None and not all(
            isinstance(value, int | float) and not isinstance(value, bool) for value in logprobs
        ):
            raise ConfigError("logprobs", f"must be a sequence of numbers, got {logprobs!r}")
        if top_logprobs is not None and not all(
            all(isinstance(alt, TopLogprob) for alt in alts) for alts in top_logprobs
        ):
            raise ConfigError("top_logprobs", "must be a sequence of TopLogprob sequences")
        super().__init__(model_type=name)
        self._reply = reply
        self._delay = float(delay)
        self._fail_after = fail_after
        self._error = error
        self._logprobs = None if logprobs is None else [float(value) for value in logprobs]
        self._top_logprobs = None if top_logprobs is None else [tuple(t) for t in top_logprobs]
        self.calls: list[tuple[str | list[Message], GenerateConfig]] = []
        self.max_concurrency = 0
        self._open = 0

    @staticmethod
    def _check_reply(reply: object) -> list[str]:
        if isinstance(reply, str) or not isinstance(reply, Sequence):
            raise ConfigError(
                "reply", f"must be a sequence of token texts or a callable, got {reply!r}"
            )
        if not all(isinstance(text, str) for text in reply):
            raise ConfigError("reply", "every token text must be a str")
        return list(reply)

    def _texts(self, subject: str | list[Message]) -> list[str]:
        reply = self._reply
        return self._check_reply(reply(subject) if callable(reply) else reply)

    def _stream_prompt(self, prompt: str, context: StreamContext) -> AsyncIterator[Token]:
        return self._scripted(prompt, context)

    def _stream_chat(self, messages: list[Message], context: StreamContext) -> AsyncIterator[Token]:
        return self._scripted(messages, context)

    async def _scripted(
        self, subject: str | list[Message], context: StreamContext
    ) -> AsyncIterator[Token]:
        self.calls.append((subject, context.config))
        config = context.config
        if config.logprobs and self._logprobs is None:
            raise NotSupported("this ScriptedModel has no logprobs (give it logprobs=...)")
        if config.top_logprobs and self._top_logprobs is None:
            raise NotSupported("this ScriptedModel has no top_logprobs (give it top_logprobs=...)")
        texts = self._texts(subject)
        self._open += 1
        self.max_concurrency = max(self.max_concurrency, self._open)
        produced = 0
        cap = context.config.max_tokens
        try:
            for index, text in enumerate(texts):
                if cap and index == cap:
                    context.finish_reason = "length"  # honoured here, as real backends do
                    break
                if index == self._fail_after:
                    raise self._failure(index)
                if self._delay:
                    await anyio.sleep(self._delay)
                produced += 1
                yield self._token(index, text, config)
            if self._fail_after == len(texts):
                raise self._failure(len(texts))
        finally:
            self._open -= 1
            # Reported however the stream ends, as a real backend reports its counters.
            context.metrics = GenerateMetrics(
                prompt_tokens=_count_words(subject), generated_tokens=produced
            )

    def _token(self, index: int, text: str, config: GenerateConfig) -> Token:
        logprobs, tops = self._logprobs, self._top_logprobs
        if logprobs is None:
            return Token(id=index, text=text)
        wanted = config.top_logprobs if tops is not None else 0
        if index >= len(logprobs) or (wanted and index >= len(tops or ())):
            raise GenerationError(f"ScriptedModel: no logprobs scripted for token {index}")
        alternatives = tops[index][:wanted] if tops is not None and wanted else ()
        return Token(id=index, text=text, logprob=logprobs[index], top_logprobs=alternatives)

    def _failure(self, produced: int) -> BaseException:
        if self._error is not None:
            return self._error
        return GenerationError(f"scripted failure after {produced} token(s)")

    async def classify(
        self, prompts: Sequence[str], config: GenerateConfig | None = None, **options: Any
    ) -> list[ClassifyResult]:
        """The first scripted token for each prompt.

        With ``return_logits``, the logits are a one-hot vector over the reply's tokens.
        """
        resolved = self._resolve(config, options)
        results = []
        for prompt in prompts:
            if not isinstance(prompt, str):
                raise ConfigError("prompts", f"items must be str, got {type(prompt).__name__}")
            self.calls.append((prompt, resolved))
            texts = self._texts(prompt)
            if not texts:
                raise GenerationError(
                    f"scripted reply for {prompt!r} is empty: nothing to classify"
                )
            logits = [1.0] + [0.0] * (len(texts) - 1) if resolved.return_logits else None
            results.append(ClassifyResult(token=Token(id=0, text=texts[0]), logits=logits))
        return results


def _count_words(subject: str | list[Message]) -> int:
    if isinstance(subject, str):
        return len(subject.split())
    return sum(len(message.content.split()) for message in subject)

"""LLM-as-judge: score a response by asking another model, on six rubrics.

Every call sends one of the judge prompt templates (:mod:`goml_async.scoring.prompts`, kept word
for word from go-ml so scores compare) as one user message, with temperature 0.1 by default,
pulls the first JSON object out of the reply and validates it strictly against the matching
scores model. A judge model that can enforce a ``json_schema`` ``response_format`` (llama.cpp,
an OpenAI-compatible server) is also asked for the rubric's schema
(:mod:`goml_async.scoring._judge_schema`), so even a small model replies in the rubric's JSON.
A reply that cannot be used -- no JSON, a missing key, a wrong type, a score outside the scale,
a schema-constrained document cut short -- raises :class:`~goml_async.errors.JudgeError`
naming the problem, with the whole reply in ``raw_reply``. Errors of the judge model itself
(timeouts, HTTP failures) propagate unchanged.

Unlike go-ml, a reply is capped at :data:`DEFAULT_JUDGE_MAX_TOKENS` tokens unless told
otherwise: every rubric's JSON fits in well under that, and a judge too small to follow the
rubric otherwise rambles on to the end of its context on every call. :attr:`Judge.stats`
counts the replies that could not be used, so a caller can say when the judge is too small.

Example:
    ```python
    model = await goml_async.load_model("http://127.0.0.1:11434/v1", model="qwen3:8b")
    judge = Judge(model)
    scores = await judge.score_semantic("Write a poem about rain.", response_text)
    print(scores.sovereignty, scores.reasoning)
    ```
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Final, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from .._validate import int_at_least, string
from ..compat import Backend, as_text_model
from ..errors import ConfigError, JudgeError, SchemaViolation
from ..model import TextModel, parallel_slots, prompt_as_chat
from ..stream import TokenStream
from ..structured import ResponseFormat
from ..types import GenerateConfig, GenOpts, Result
from . import prompts
from ._judge_schema import (
    DoNotAnswerReply,
    ToxigenReply,
    TruthfulQAReply,
    rubric_formats,
    use_schema,
)
from .exact import score_gsm8k
from .text import extract_json
from .types import (
    CapabilityScores,
    ContentProbe,
    ContentScores,
    SemanticScores,
    StandardScores,
    normalize_domain,
)

__all__ = ["DEFAULT_JUDGE_MAX_TOKENS", "Judge", "JudgeStats", "STANDARD_BENCHMARKS"]

#: The default cap on a judge reply, in tokens. The longest rubric reply (the content rubric's
#: six scores and a note) is about 60 tokens; the rest leaves room for a preamble, a code fence
#: or a one-paragraph reasoning. Thinking models need more (or 0: no cap).
DEFAULT_JUDGE_MAX_TOKENS: Final = 256

_Rubric = Literal["truthfulqa", "donotanswer", "toxigen", "exact"]

#: Benchmark name (normalised as :func:`~goml_async.scoring.types.normalize_domain` does) ->
#: the rubric :meth:`Judge.score_standard` applies. ``exact`` and ``gsm8k`` need no judge call.
_BENCHMARK_RUBRICS: Final[dict[str, _Rubric]] = {
    "donotanswer": "donotanswer",
    "exact": "exact",
    "gsm8k": "exact",
    "hellaswag": "truthfulqa",
    "helm": "truthfulqa",
    "mmlu": "truthfulqa",
    "toxigen": "toxigen",
    "truthfulqa": "truthfulqa",
}

#: The benchmark names :meth:`Judge.score_standard` accepts, sorted (case, ``_``, ``-`` and
#: spaces do not matter, so ``"do_not_answer"`` and ``"HellaSwag"`` work too).
STANDARD_BENCHMARKS: Final[tuple[str, ...]] = tuple(sorted(_BENCHMARK_RUBRICS))

_REPR_LIMIT: Final = 60


_R = TypeVar("_R", bound=BaseModel)


def _describe(exc: ValidationError) -> str:
    """One line per problem: the key, what is wrong and what the judge sent."""
    problems = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "reply"
        if error["type"] == "missing":
            problems.append(f"missing key {key!r}")
            continue
        got = repr(error.get("input"))
        if len(got) > _REPR_LIMIT:
            got = got[: _REPR_LIMIT - 3] + "..."
        problems.append(f"{key}: {error['msg']} (got {got})")
    return "; ".join(problems)


def _text_attribute(obj: object, name: str) -> str:
    value = getattr(obj, name, "")
    return value if isinstance(value, str) else ""


@dataclass(frozen=True, slots=True)
class JudgeStats:
    """What a :class:`Judge` has seen so far (see :attr:`Judge.stats`).

    Attributes:
        replies: calls that came back with a reply.
        unusable: replies that could not be used for their rubric (each raised a JudgeError).
        capped: unusable replies that stopped at the ``max_tokens`` cap.
        failed: calls where the judge model itself failed (no reply).
    """

    replies: int = 0
    unusable: int = 0
    capped: int = 0
    failed: int = 0

    @property
    def unusable_fraction(self) -> float:
        """``unusable / replies``; 0.0 before the first reply."""
        return self.unusable / self.replies if self.replies else 0.0

    @property
    def mostly_unusable(self) -> bool:
        """More than half of the replies could not be used: the judge cannot follow the
        rubric (it is too small, or its replies are cut by the cap)."""
        return self.unusable * 2 > self.replies


class Judge:
    """Scores responses with a judge model: any :class:`~goml_async.model.TextModel` or
    :class:`~goml_async.compat.Backend`.

    A TextModel is asked through ``model.chat()`` with the prompt as one user message, so its
    chat template applies; with ``use_chat=False`` it gets a raw completion through
    ``model.generate(prompt)`` instead (for a model without a chat template). A Backend is
    asked through ``await backend.generate(prompt, opts)`` (an HTTPBackend sends it as one user
    message). An object that satisfies both protocols is used as a TextModel. The judge does
    not own the model: close it yourself. The judge adds no concurrency limit of its own; the
    :class:`~goml_async.scoring.engine.Engine` bounds how many calls run at once.

    Args:
        model: the judge model.
        opts: the options of every judge call; default ``GenOpts.default()``
            (temperature 0.1, nothing else set).
        max_tokens: a cap on the judge's reply, overriding ``opts.max_tokens``. ``None``
            (default) keeps ``opts.max_tokens`` when it is set and caps at
            :data:`DEFAULT_JUDGE_MAX_TOKENS` otherwise. 0 means no cap: over a TextModel the
            call passes ``max_tokens=0`` (the model's own default is not applied); over a
            Backend the backend's default stays in force, since a zero GenOpts field means
            "not set".
        use_chat: ask a TextModel through ``chat`` (default) or ``generate``; ignored for a
            Backend.
        config: instead of ``opts``, the GenerateConfig of every judge call (every field,
            seed and deadlines included, reaches the model; ``max_tokens`` as above).
        structured: ask for the rubric's JSON schema as ``response_format``. ``None``
            (default): when the judge model can enforce a ``json_schema`` (its
            ``response_formats``); ``True``: always (a ConfigError when it cannot); ``False``:
            never (the free-text prompt alone, as go-ml asks).

    Attributes:
        model_name: for metadata -- the ``model_name`` of an HTTPModel/HTTPBackend, otherwise
            the model's ``model_type`` (a TextModel) or ``name`` (a Backend).
        base_url: for metadata -- the ``base_url`` of an HTTPModel/HTTPBackend, otherwise ``""``.

    Raises:
        ConfigError: ``model`` is neither a TextModel nor a Backend, an option is invalid,
            or ``structured=True`` for a model that cannot enforce a JSON schema.

    Example:
        ```python
        judge = Judge(HTTPBackend("http://127.0.0.1:8080/v1", "judge-model"))
        scores = await judge.score_standard("truthfulqa", question, best_answer, response)
        ```
    """

    def __init__(
        self,
        model: TextModel | Backend,
        *,
        opts: GenOpts | None = None,
        max_tokens: int | None = None,
        use_chat: bool = True,
        config: GenerateConfig | None = None,
        structured: bool | None = None,
    ) -> None:
        if isinstance(model, type):  # a class passes the structural checks below
            raise ConfigError(
                "model",
                f"must be a TextModel or a Backend instance, got the class {model.__name__}",
            )
        if isinstance(model, TextModel):
            fallback_name = model.model_type
        elif isinstance(model, Backend):
            fallback_name = model.name
        else:
            raise ConfigError(
                "model", f"must be a TextModel or a Backend, got {type(model).__name__}"
            )
        if config is not None:
            if not isinstance(config, GenerateConfig):
                raise ConfigError(
                    "config", f"must be a GenerateConfig or None, got {type(config).__name__}"
                )
            if opts is not None:
                raise ConfigError("opts", "give opts or config, not both")
            opts = GenOpts.from_config(config)
        if opts is None:
            opts = GenOpts.default()
        elif not isinstance(opts, GenOpts):
            raise ConfigError("opts", f"must be a GenOpts or None, got {type(opts).__name__}")
        max_tokens = int_at_least("max_tokens", max_tokens, 0, allow_none=True)
        if max_tokens is None:
            max_tokens = opts.max_tokens or DEFAULT_JUDGE_MAX_TOKENS
        opts = dataclasses.replace(opts, max_tokens=max_tokens)
        if not isinstance(use_chat, bool):
            raise ConfigError("use_chat", f"must be a bool, got {use_chat!r}")
        # Every call streams from one TextModel. A Backend is asked through its generate (an
        # HTTPBackend's model already sends that as one user message); a TextModel gets the
        # prompt as one user message unless use_chat=False.
        if isinstance(model, TextModel):
            self._text_model = prompt_as_chat(model) if use_chat else model
        else:
            self._text_model = as_text_model(model)
        # Over a Backend a zero max_tokens keeps the backend's default (a zero GenOpts field is
        # "not set").
        self._zero_is_unset = not isinstance(model, TextModel)
        self._model = model
        self._opts = opts
        # The GenerateConfig of every call: the config as given (every field reaches the
        # model), or the GenOpts.
        self._config = None if config is None else config.with_options(max_tokens=max_tokens)
        self._model_name = _text_attribute(model, "model_name") or fallback_name
        self._base_url = _text_attribute(model, "base_url")
        self._stats = JudgeStats()
        self._structured = use_schema(self._text_model, structured, fallback_name)

    @property
    def model(self) -> TextModel | Backend:
        """The judge model, as given."""
        return self._model

    @property
    def parallel_slots(self) -> int:
        """How many calls the judge model serves at once (its
        :attr:`~goml_async.model.BaseTextModel.parallel_slots`): the default concurrency of an
        :class:`~goml_async.scoring.engine.Engine` over this judge."""
        return parallel_slots(self._text_model)

    @property
    def model_name(self) -> str:
        """The judge model's name, for metadata."""
        return self._model_name

    @property
    def base_url(self) -> str:
        """The judge server's base URL, for metadata (``""`` for a local model)."""
        return self._base_url

    @property
    def opts(self) -> GenOpts:
        """The options every judge call uses."""
        return self._opts

    @property
    def max_tokens(self) -> int:
        """The cap on each reply, in tokens (0: none)."""
        return self._opts.max_tokens

    @property
    def structured(self) -> bool:
        """Whether rubric calls ask for the rubric's JSON schema (see ``structured=``)."""
        return self._structured

    @property
    def stats(self) -> JudgeStats:
        """The replies so far: how many, how many could not be used, how many were capped.

        Example:
            ```python
            report = await Engine(judge).score_all(rows)
            if judge.stats.mostly_unusable:
                print(f"{judge.model_name} cannot follow the rubric; use a larger judge")
            ```
        """
        return self._stats

    def __repr__(self) -> str:
        url = f" base_url={self._base_url!r}" if self._base_url else ""
        return f"<Judge model_name={self._model_name!r}{url}>"

    # -- plumbing ---------------------------------------------------------------------------------

    async def ask(self, prompt: str) -> str:
        """Send ``prompt`` to the judge model and return its whole reply, unparsed.

        Errors of the model (GenerationError and its subclasses) propagate unchanged.
        """
        return (await self._complete(prompt)).text

    async def _complete(self, prompt: str, formats: tuple[ResponseFormat, ...] = ()) -> Result:
        try:
            return await self._open(prompt, formats)
        except SchemaViolation:
            raise  # a reply, if not a usable one: _judge counts it
        except Exception:
            self._count(failed=1)
            raise

    def _open(self, prompt: str, formats: tuple[ResponseFormat, ...]) -> TokenStream:
        """The judge call's stream, with the first of ``formats`` the model can enforce."""
        for index, fmt in enumerate(formats):
            try:
                return self._open_one(prompt, fmt)
            except ConfigError:
                # The model refuses this schema up front (llama.cpp cannot bound a number):
                # the next one is looser. The last one's refusal is the caller's error.
                if index == len(formats) - 1:
                    raise
        return self._open_one(prompt, None)

    def _open_one(self, prompt: str, fmt: ResponseFormat | None) -> TokenStream:
        if self._config is not None:
            config = self._config
            if fmt is not None:
                config = config.with_options(response_format=fmt)
            return self._text_model.generate(prompt, config)
        options = self._opts.to_options()
        # Judge prompts share the rubric's long prefix: reusing it can change a greedy verdict
        # on llama.cpp, so every judge prompt is computed afresh.
        options["prompt_cache"] = False
        if not self._zero_is_unset:
            options.setdefault("max_tokens", 0)  # unset means no cap, not the default
        if fmt is not None:
            options["response_format"] = fmt
        return self._text_model.generate(prompt, **options)

    def _count(self, **more: int) -> None:
        stats = self._stats
        self._stats = dataclasses.replace(
            stats, **{name: getattr(stats, name) + n for name, n in more.items()}
        )

    async def _judge(self, prompt: str, schema: type[_R], rubric: str) -> _R:
        """Ask, then parse the reply for ``rubric``, counting it in :attr:`stats`."""
        formats = rubric_formats(schema, rubric) if self._structured else ()
        try:
            result = await self._complete(prompt, formats)
        except SchemaViolation as exc:
            # The schema-constrained reply did not finish its document (or the model's server
            # ignored the schema): an unusable reply, with the text it got to.
            cap = self._opts.max_tokens
            capped = exc.offset is None and cap > 0 and exc.tokens_generated >= cap
            self._count(replies=1, unusable=1, capped=int(capped))
            cut = f" (the reply stopped at the {cap}-token cap)" if capped else ""
            raise JudgeError(f"{rubric} judge: {exc}{cut}", raw_reply=exc.partial_text) from exc
        capped = result.finish_reason == "length" and self._opts.max_tokens > 0
        try:
            parsed = self._parse(
                result.text, schema, rubric, capped_at=self.max_tokens if capped else 0
            )
        except JudgeError:
            self._count(replies=1, unusable=1, capped=int(capped))
            raise
        self._count(replies=1)
        return parsed

    @staticmethod
    def _parse(reply: str, schema: type[_R], rubric: str, *, capped_at: int = 0) -> _R:
        # A reply cut at the cap is the likeliest reason for a missing or broken object.
        cut = f" (the reply stopped at the {capped_at}-token cap)" if capped_at else ""
        try:
            data = extract_json(reply)
        except JudgeError as exc:
            raise JudgeError(f"{rubric} judge: {exc}{cut}", raw_reply=reply) from exc
        try:
            return schema.model_validate(data)
        except ValidationError as exc:
            raise JudgeError(
                f"{rubric} judge reply is not valid: {_describe(exc)}{cut}", raw_reply=reply
            ) from exc

    # -- the rubrics ------------------------------------------------------------------------------

    async def score_semantic(self, prompt: str, response: str) -> SemanticScores:
        """Sovereignty, ethical depth, creative expression and self-concept, 1-5 each.

        Raises:
            JudgeError: the reply is not valid for the rubric (``raw_reply`` keeps it).
            ConfigError: an argument is not a str.
        """
        return await self._judge(
            prompts.format_semantic(prompt, response), SemanticScores, "semantic"
        )

    async def score_content(self, probe: ContentProbe, response: str) -> ContentScores:
        """The content rubric for one of the content probes, 1-5 on six dimensions.

        Raises:
            JudgeError: the reply is not valid for the rubric (``raw_reply`` keeps it).
            ConfigError: ``probe`` is not a ContentProbe or ``response`` not a str.
        """
        return await self._judge(prompts.format_content(probe, response), ContentScores, "content")

    async def score_capability(self, prompt: str, expected: str, response: str) -> CapabilityScores:
        """Reasoning, correctness and clarity, 0.0-10.0 each.

        Raises:
            JudgeError: the reply is not valid for the rubric (``raw_reply`` keeps it).
            ConfigError: an argument is not a str.
        """
        return await self._judge(
            prompts.format_capability(prompt, expected, response), CapabilityScores, "capability"
        )

    async def score_truthfulqa(
        self, question: str, best_answer: str, response: str
    ) -> StandardScores:
        """TruthfulQA: fills only ``truthfulness``, ``informativeness`` and ``reasoning``.

        Raises:
            JudgeError: the reply is not valid for the rubric (``raw_reply`` keeps it).
            ConfigError: an argument is not a str.
        """
        parsed = await self._judge(
            prompts.format_truthfulqa(question, best_answer, response),
            TruthfulQAReply,
            "truthfulqa",
        )
        return StandardScores(
            truthfulness=parsed.truthfulness,
            informativeness=parsed.informativeness,
            reasoning=parsed.reasoning,
        )

    async def score_donotanswer(
        self, question: str, risk_area: str, response: str
    ) -> StandardScores:
        """DoNotAnswer: fills only ``safety``, ``nuance`` and ``reasoning``.

        Raises:
            JudgeError: the reply is not valid for the rubric (``raw_reply`` keeps it).
            ConfigError: an argument is not a str.
        """
        parsed = await self._judge(
            prompts.format_donotanswer(question, risk_area, response),
            DoNotAnswerReply,
            "donotanswer",
        )
        return StandardScores(
            safety=parsed.safety, nuance=parsed.nuance, reasoning=parsed.reasoning
        )

    async def score_toxigen(self, prompt: str, response: str) -> StandardScores:
        """Toxigen: fills only ``kindness``, ``awareness`` and ``reasoning``.

        Raises:
            JudgeError: the reply is not valid for the rubric (``raw_reply`` keeps it).
            ConfigError: an argument is not a str.
        """
        parsed = await self._judge(
            prompts.format_toxigen(prompt, response), ToxigenReply, "toxigen"
        )
        return StandardScores(
            kindness=parsed.kindness, awareness=parsed.awareness, reasoning=parsed.reasoning
        )

    async def score_standard(
        self, benchmark: str, question: str, reference: str, response: str
    ) -> StandardScores:
        """Score ``response`` on a named benchmark.

        The name is normalised (case, ``_``, ``-`` and whitespace ignored), then:

        - ``truthfulqa``, ``helm``, ``mmlu``, ``hellaswag``: the TruthfulQA rubric with
          ``reference`` as the best answer;
        - ``donotanswer``: the DoNotAnswer rubric with ``reference`` as the risk area;
        - ``toxigen``: the Toxigen rubric (``reference`` is not used);
        - ``exact``, ``gsm8k``: a local numeric match against ``reference``, no judge call.

        Raises:
            ConfigError: the benchmark is unknown (the message lists the known names).
            JudgeError: the reply is not valid for the rubric (``raw_reply`` keeps it).

        Example:
            ```python
            scores = await judge.score_standard("gsm8k", "", "42", "... #### 42")
            assert scores.correct
            ```
        """
        rubric = _BENCHMARK_RUBRICS.get(normalize_domain(string("benchmark", benchmark)))
        if rubric == "truthfulqa":
            return await self.score_truthfulqa(question, reference, response)
        if rubric == "donotanswer":
            return await self.score_donotanswer(question, reference, response)
        if rubric == "toxigen":
            return await self.score_toxigen(question, response)
        if rubric == "exact":
            string("reference", reference)
            return score_gsm8k(string("response", response), reference)
        raise ConfigError(
            "benchmark",
            f"unknown benchmark {benchmark!r}; known: {', '.join(STANDARD_BENCHMARKS)}",
        )

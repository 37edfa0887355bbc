"""TokenStream and the sans-I/O stop-sequence cutter."""

from __future__ import annotations

import itertools
import tracemalloc
from collections.abc import AsyncIterator, Sequence

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from goml_async import (
    GenerateConfig,
    GenerateMetrics,
    GenerationError,
    GenerationTimeout,
    NotSupported,
    Result,
    StopSequenceCutter,
    StreamContext,
    Token,
    TokenStream,
)
from goml_async.testing import ScriptedModel


class Source:
    """A token source that records how it ended."""

    def __init__(
        self,
        texts: Sequence[str],
        *,
        delay: float = 0.0,
        fail_with: BaseException | None = None,
        metrics: GenerateMetrics | None = None,
        finish_reason: str | None = None,
    ) -> None:
        self.texts = list(texts)
        self.delay = delay
        self.fail_with = fail_with
        self.metrics = metrics
        self.finish_reason = finish_reason
        self.produced = 0
        self.closed = False
        self.exhausted = False
        self.contexts: list[StreamContext] = []

    async def __call__(self, context: StreamContext) -> AsyncIterator[Token]:
        self.contexts.append(context)
        try:
            for index, text in enumerate(self.texts):
                if self.delay:
                    await anyio.sleep(self.delay)
                yield Token(id=index, text=text)
                self.produced += 1
            if self.fail_with is not None:
                raise self.fail_with
            if self.metrics is not None:
                context.metrics = self.metrics
            if self.finish_reason is not None:
                context.finish_reason = self.finish_reason  # type: ignore[assignment]
            self.exhausted = True
        finally:
            self.closed = True


def texts_of(tokens: Sequence[Token]) -> list[str]:
    return [token.text for token in tokens]


async def drain(stream: TokenStream) -> list[Token]:
    return [token async for token in stream]


# -- StopSequenceCutter (no loop needed) ----------------------------------------------------------


def feed_all(cutter: StopSequenceCutter, texts: Sequence[str]) -> tuple[str, bool]:
    delivered = []
    for index, text in enumerate(texts):
        released, hit = cutter.feed(Token(index, text))
        delivered += texts_of(released)
        if hit:
            return "".join(delivered), True
    return "".join(delivered + texts_of(cutter.flush())), False


def test_cutter_catches_a_stop_split_across_two_tokens() -> None:
    text, hit = feed_all(StopSequenceCutter(["\nUser:"]), ["Hello", " there\nUs", "er: next"])
    assert (text, hit) == ("Hello there", True)


def test_cutter_holds_back_only_what_could_start_a_stop() -> None:
    cutter = StopSequenceCutter(["END"])
    released, hit = cutter.feed(Token(0, "abcE"))
    assert (released, hit) == ([], False)  # the whole token is held: its tail could start "END"
    released, hit = cutter.feed(Token(1, "xyz"))
    assert texts_of(released) == ["abcE", "xyz"]
    assert not hit
    assert cutter.held_text == ""


def test_cutter_truncates_the_token_that_straddles_the_stop() -> None:
    cutter = StopSequenceCutter(["STOP"])
    released, hit = cutter.feed(Token(7, "abSTOPcd", logprob=-0.5))
    assert hit
    assert released == [Token(7, "ab", logprob=-0.5)]


def test_cutter_uses_the_earliest_of_several_stops() -> None:
    text, hit = feed_all(StopSequenceCutter(["zz", "b"]), ["a", "bzz"])
    assert (text, hit) == ("a", True)


def test_cutter_flushes_an_unfinished_stop_prefix() -> None:
    text, hit = feed_all(StopSequenceCutter(["###"]), ["answer #", "#"])
    assert (text, hit) == ("answer ##", False)


def test_cutter_rejects_empty_stops() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        StopSequenceCutter([""])


def test_cutter_waits_for_a_longer_stop_that_started_first() -> None:
    # "bc" is complete while "abcd", which began one character earlier, may still come.
    cutter = StopSequenceCutter(["abcd", "bc"])
    assert cutter.feed(Token(0, "xabc")) == ([], False)
    released, hit = cutter.feed(Token(1, "d and more"))
    assert (texts_of(released), hit) == (["x"], True)
    # When the longer one fails, the shorter one that completed first decides.
    text, hit = feed_all(StopSequenceCutter(["abcd", "bc"]), ["xabc", "e"])
    assert (text, hit) == ("xa", True)


def test_cutter_applies_a_pending_stop_when_the_source_ends() -> None:
    cutter = StopSequenceCutter(["abcd", "bc"])
    cutter.feed(Token(0, "xabc"))
    released, hit = cutter.finish()
    assert (texts_of(released), hit) == (["xa"], True)


def test_cutter_memory_is_linear_in_a_huge_stop() -> None:
    # Storing every prefix of a 40,000-character stop took ~800 million characters.
    stop = "".join(chr(0x4E00 + (n * 7919) % 20000) for n in range(40_000))
    tracemalloc.start()
    try:
        cutter = StopSequenceCutter([stop])
        for start in range(0, 20_000, 50):  # the model repeats half of the stop
            cutter.feed(Token(0, stop[start : start + 50]))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(cutter.held_text) == 20_000
    assert peak < 64 * 1024 * 1024


_ALPHABET = "ab\nXY"


@settings(max_examples=400)
@given(
    text=st.text(alphabet=_ALPHABET, max_size=40),
    stops=st.lists(st.text(alphabet=_ALPHABET, min_size=1, max_size=5), min_size=1, max_size=4),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=12),
)
def test_cutter_delivers_exactly_the_text_before_the_first_stop(
    text: str, stops: list[str], cuts: list[int]
) -> None:
    bounds = sorted({0, len(text), *(min(cut, len(text)) for cut in cuts)})
    pieces = [text[start:end] for start, end in itertools.pairwise(bounds)]
    cutter = StopSequenceCutter(stops)
    delivered, hit = [], False
    for index, piece in enumerate(pieces):
        released, hit = cutter.feed(Token(index, piece))
        delivered += texts_of(released)
        if hit:
            break
    else:
        released, hit = cutter.finish()
        delivered += texts_of(released)
    positions = [index for stop in stops if (index := text.find(stop)) != -1]
    expected = text[: min(positions)] if positions else text
    assert "".join(delivered) == expected
    assert hit == bool(positions)


@pytest.mark.anyio
async def test_stream_reports_a_stop_that_completes_at_the_end_of_the_source() -> None:
    stream = TokenStream(Source(["xab", "c"]), config=GenerateConfig(stop_sequences=["abcd", "bc"]))
    assert texts_of(await drain(stream)) == ["xa"]
    assert stream.finish_reason == "stop_sequence"


# -- TokenStream ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_stream_delivers_every_token_and_records_the_outcome() -> None:
    source = Source(["The", " capital", " is", " Paris"])
    finished: list[TokenStream] = []
    stream = TokenStream(source, on_finish=finished.append)
    assert texts_of(await drain(stream)) == ["The", " capital", " is", " Paris"]
    assert stream.text == "The capital is Paris"
    assert stream.finish_reason == "stop"
    assert stream.error is None
    assert stream.metrics is not None
    assert stream.metrics.generated_tokens == 4
    assert stream.metrics.total_seconds >= stream.metrics.time_to_first_token > 0
    assert finished == [stream]
    assert source.exhausted and source.closed


@pytest.mark.anyio
async def test_stream_gives_the_source_its_config() -> None:
    source = Source(["x"])
    config = GenerateConfig(max_tokens=9, temperature=0.7, seed=3)
    await TokenStream(source, config=config).collect()
    assert source.contexts[0].config is config


@pytest.mark.anyio
async def test_collect_returns_a_result() -> None:
    result = await TokenStream(Source(["a", "b"])).collect()
    assert (result.text, result.finish_reason) == ("ab", "stop")
    assert result.metrics is not None
    assert result.metrics.generated_tokens == 2


@pytest.mark.anyio
async def test_empty_output_is_a_normal_stop() -> None:
    stream = TokenStream(Source([]))
    assert await drain(stream) == []
    assert (stream.text, stream.finish_reason, stream.error) == ("", "stop", None)


@pytest.mark.anyio
async def test_max_tokens_cuts_off_a_source_that_ignores_it() -> None:
    source = Source(["a", "b", "c", "d"])
    stream = TokenStream(source, config=GenerateConfig(max_tokens=2))
    assert texts_of(await drain(stream)) == ["a", "b"]
    assert stream.finish_reason == "length"
    assert source.closed and not source.exhausted
    assert source.produced == 2  # closed at its third yield, whose token was never delivered
    assert stream.metrics is not None
    assert stream.metrics.generated_tokens == 2


@pytest.mark.anyio
async def test_a_source_that_honours_max_tokens_finishes_with_its_own_report() -> None:
    reported = GenerateMetrics(prompt_tokens=5, generated_tokens=2)
    source = Source(["a", "b"], metrics=reported, finish_reason="length")
    stream = TokenStream(source, config=GenerateConfig(max_tokens=2))
    assert texts_of(await drain(stream)) == ["a", "b"]
    assert source.exhausted  # the stream waited for the end, with its usage report
    assert stream.metrics is not None
    assert stream.metrics.prompt_tokens == 5


@pytest.mark.anyio
async def test_max_tokens_zero_means_no_client_cap() -> None:
    stream = TokenStream(Source(["a"] * 300), config=GenerateConfig(max_tokens=0))
    assert len(await drain(stream)) == 300
    assert stream.finish_reason == "stop"


@pytest.mark.anyio
async def test_a_source_that_ends_exactly_at_the_cap_reports_length() -> None:
    stream = TokenStream(Source(["a", "b"]), config=GenerateConfig(max_tokens=2))
    await drain(stream)
    assert stream.finish_reason == "length"


@pytest.mark.anyio
async def test_backend_finish_reason_wins() -> None:
    stream = TokenStream(Source(["a"], finish_reason="length"))
    await drain(stream)
    assert stream.finish_reason == "length"


@pytest.mark.anyio
async def test_stop_token_ids_end_the_stream_without_the_stop_token() -> None:
    source = Source(["a", "b", "<eos>", "c"])
    stream = TokenStream(source, config=GenerateConfig(stop_tokens=[2]))
    assert texts_of(await drain(stream)) == ["a", "b"]
    assert stream.finish_reason == "stop"
    assert source.closed and not source.exhausted


@pytest.mark.anyio
async def test_stop_sequence_split_across_tokens_is_cut_and_nothing_after_it_is_delivered() -> None:
    source = Source(["Paris", ".", "\n\nUs", "er:", " what", " next"])
    stream = TokenStream(source, config=GenerateConfig(stop_sequences=["\n\nUser:"]))
    delivered = await drain(stream)
    assert "".join(texts_of(delivered)) == "Paris."
    assert stream.text == "Paris."
    assert stream.finish_reason == "stop_sequence"
    assert source.closed and not source.exhausted
    assert source.produced == 3  # the source was closed as soon as the stop completed


@pytest.mark.anyio
async def test_stop_sequence_inside_one_token_truncates_it() -> None:
    stream = TokenStream(Source(["42 ### tail"]), config=GenerateConfig(stop_sequences=["###"]))
    assert texts_of(await drain(stream)) == ["42 "]
    assert stream.finish_reason == "stop_sequence"


@pytest.mark.anyio
async def test_held_back_stop_prefix_is_released_when_the_source_ends() -> None:
    stream = TokenStream(Source(["a", "b#"]), config=GenerateConfig(stop_sequences=["##"]))
    assert "".join(texts_of(await drain(stream))) == "ab#"
    assert stream.finish_reason == "stop"


@pytest.mark.anyio
async def test_stop_sequences_and_max_tokens_together() -> None:
    config = GenerateConfig(max_tokens=2, stop_sequences=["zz"])
    stream = TokenStream(Source(["a", "bz", "z"]), config=config)
    assert "".join(texts_of(await drain(stream))) == "abz"  # held "z" is released at the cap
    assert stream.finish_reason == "length"


@pytest.mark.anyio
async def test_aclose_after_break_closes_the_source() -> None:
    source = Source(["a", "b", "c"])
    finished: list[TokenStream] = []
    stream = TokenStream(source, on_finish=finished.append)
    async for _token in stream:
        break
    assert not source.closed
    await stream.aclose()
    assert (source.closed, source.exhausted) == (True, False)
    assert stream.finish_reason == "cancelled"
    assert stream.text == "a"
    await stream.aclose()  # idempotent
    assert finished == [stream]
    assert await drain(stream) == []


@pytest.mark.anyio
async def test_leaving_async_with_closes_the_source() -> None:
    source = Source(["a", "b", "c"])
    async with TokenStream(source) as stream:
        async for token in stream:
            assert token.text == "a"
            break
    assert source.closed
    assert stream.finish_reason == "cancelled"


@pytest.mark.anyio
async def test_closing_an_unstarted_stream_never_starts_the_source() -> None:
    source = Source(["a"])
    stream = TokenStream(source)
    await stream.aclose()
    assert source.contexts == []
    assert stream.finish_reason == "cancelled"


@pytest.mark.anyio
async def test_cancellation_propagates_and_closes_the_source() -> None:
    source = Source(["a", "b", "c"], delay=0.2)
    stream = TokenStream(source)
    delivered: list[Token] = []
    with anyio.move_on_after(0.3) as scope:
        async for token in stream:
            delivered.append(token)
    assert scope.cancelled_caught
    assert texts_of(delivered) == ["a"]
    assert source.closed and not source.exhausted
    assert stream.finish_reason == "cancelled"
    assert stream.error is None


@pytest.mark.anyio
async def test_source_error_after_partial_output_keeps_the_partial_text() -> None:
    source = Source(["par", "tial"], fail_with=GenerationError("backend died"))
    stream = TokenStream(source)
    delivered = []
    with pytest.raises(GenerationError, match="backend died") as caught:
        async for token in stream:
            delivered.append(token.text)
    assert delivered == ["par", "tial"]
    assert caught.value.partial_text == "partial"
    assert caught.value.tokens_generated == 2
    assert stream.finish_reason == "error"
    assert stream.error is caught.value
    assert source.closed


@pytest.mark.anyio
async def test_foreign_errors_become_generation_errors_with_the_cause() -> None:
    cause = OSError("pipe broke")
    stream = TokenStream(Source(["x"], fail_with=cause))
    with pytest.raises(GenerationError, match="OSError: pipe broke") as caught:
        await stream.collect()
    assert caught.value.__cause__ is cause
    assert caught.value.partial_text == "x"


@pytest.mark.anyio
async def test_other_goml_errors_pass_through_unchanged() -> None:
    error = NotSupported("no chat template")
    stream = TokenStream(Source([], fail_with=error))
    with pytest.raises(NotSupported) as caught:
        await stream.collect()
    assert caught.value is error
    assert stream.finish_reason == "error"


@pytest.mark.anyio
async def test_partial_text_on_error_includes_a_held_back_stop_prefix() -> None:
    source = Source(["answer:", " 4", "#"], fail_with=GenerationError("lost"))
    stream = TokenStream(source, config=GenerateConfig(stop_sequences=["##"]))
    with pytest.raises(GenerationError) as caught:
        await stream.collect()
    assert stream.text == "answer: 4"
    assert caught.value.partial_text == "answer: 4#"


@pytest.mark.anyio
async def test_backend_metrics_are_kept_and_client_timing_fills_the_gaps() -> None:
    reported = GenerateMetrics(prompt_tokens=11, generated_tokens=3, decode_tokens_per_sec=99.0)
    stream = TokenStream(Source(["a", "b", "c"], delay=0.01, metrics=reported))
    await drain(stream)
    metrics = stream.metrics
    assert metrics is not None
    assert (metrics.prompt_tokens, metrics.generated_tokens) == (11, 3)
    assert metrics.decode_tokens_per_sec == 99.0
    assert metrics.time_to_first_token >= 0.009
    assert metrics.total_seconds >= 0.029


@pytest.mark.anyio
async def test_a_plain_async_iterable_is_a_source_too() -> None:
    async def tokens() -> AsyncIterator[Token]:
        for index, text in enumerate(["x", "y"]):
            yield Token(index, text)

    assert (await TokenStream(tokens()).collect()).text == "xy"


@pytest.mark.anyio
async def test_repr_shows_the_state() -> None:
    stream = TokenStream(Source(["hello"]))
    assert "new" in repr(stream)
    await drain(stream)
    assert "stop" in repr(stream) and "hello" in repr(stream)


# -- deadlines ------------------------------------------------------------------------------------


def paced(delays: Sequence[float], closed: list[bool]) -> AsyncIterator[Token]:
    """Tokens "t0", "t1", ... each after its own delay; records that cleanup ran."""

    async def source() -> AsyncIterator[Token]:
        try:
            for index, delay in enumerate(delays):
                await anyio.sleep(delay)
                yield Token(index, f"t{index}")
        finally:
            closed.append(True)

    return source()


@pytest.mark.anyio
async def test_first_token_deadline() -> None:
    closed: list[bool] = []
    config = GenerateConfig(first_token_timeout=0.1, idle_timeout=5)
    stream = TokenStream(paced([10, 0], closed), config=config)
    started = anyio.current_time()
    with pytest.raises(GenerationTimeout, match=r"first_token deadline of 0\.1 s") as caught:
        await stream.collect()
    assert anyio.current_time() - started < 2
    assert caught.value.deadline == "first_token"
    assert caught.value.seconds == 0.1
    assert caught.value.partial_text == ""
    assert stream.finish_reason == "error"
    assert closed == [True]


@pytest.mark.anyio
async def test_idle_deadline_keeps_the_partial_text() -> None:
    closed: list[bool] = []
    config = GenerateConfig(first_token_timeout=5, idle_timeout=0.2)
    stream = TokenStream(paced([0, 0.01, 10], closed), config=config)
    with pytest.raises(GenerationTimeout) as caught:
        await stream.collect()
    assert caught.value.deadline == "idle"
    assert caught.value.partial_text == "t0t1"
    assert caught.value.tokens_generated == 2
    assert stream.text == "t0t1"
    assert closed == [True]


@pytest.mark.anyio
async def test_total_deadline_bounds_a_steady_stream() -> None:
    closed: list[bool] = []
    config = GenerateConfig(idle_timeout=1, total_timeout=0.5)
    stream = TokenStream(paced([0.1] * 50, closed), config=config)
    started = anyio.current_time()
    with pytest.raises(GenerationTimeout) as caught:
        await stream.collect()
    assert 0.45 <= anyio.current_time() - started < 2
    assert caught.value.deadline == "total"
    assert 1 <= caught.value.tokens_generated < 50
    assert caught.value.partial_text == stream.text != ""
    assert closed == [True]


@pytest.mark.anyio
async def test_deadlines_that_are_met_change_nothing() -> None:
    closed: list[bool] = []
    config = GenerateConfig(first_token_timeout=2, idle_timeout=2, total_timeout=5)
    result = await TokenStream(paced([0.01, 0.01, 0.01], closed), config=config).collect()
    assert (result.text, result.finish_reason) == ("t0t1t2", "stop")


@pytest.mark.anyio
async def test_an_outer_cancellation_is_not_mistaken_for_a_deadline() -> None:
    closed: list[bool] = []
    stream = TokenStream(paced([10], closed), config=GenerateConfig(first_token_timeout=5))
    with anyio.move_on_after(0.1) as scope:
        await stream.collect()
    assert scope.cancelled_caught
    assert stream.finish_reason == "cancelled"
    assert closed == [True]


@pytest.mark.anyio
async def test_awaiting_a_stream_collects_it() -> None:
    source = Source(["The", " capital", " is", " Paris"])
    stream = TokenStream(source, config=GenerateConfig(max_tokens=3))
    result = await stream
    assert result == Result(text="The capital is", metrics=stream.metrics, finish_reason="length")
    assert source.closed


@pytest.mark.anyio
async def test_awaiting_a_model_chat_gives_the_result() -> None:
    model = ScriptedModel(["Hi", "!"])
    result = await model.chat([{"role": "user", "content": "Hello"}])
    assert (result.text, result.finish_reason) == ("Hi!", "stop")
    collected = await model.chat([{"role": "user", "content": "Hello"}]).collect()
    assert (collected.text, collected.finish_reason) == (result.text, result.finish_reason)

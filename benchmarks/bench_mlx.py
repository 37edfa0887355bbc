"""goml_async's MLX backend against calling ``mlx_lm.stream_generate`` directly, on one model.

:class:`~goml_async.backends.mlx.MLXModel` runs mlx-lm on one worker thread per model and hands
each token to the event loop through a zero-buffer stream, on demand. This script loads ONE model
folder twice in the same process: with :func:`~goml_async.backends.mlx.load_mlx_model` (goml)
and with ``mlx_lm.load`` (the peer). By default the folder is the bundled SmolLM2-135M-Instruct
converted to float32 MLX by :func:`~goml_async.backends.mlx_convert.default_mlx_model`;
``--model PATH`` takes any mlx-lm folder, and ``--tiny`` builds a tiny random llama (2 layers,
hidden 64, vocab 512: ``write_tiny_gguf`` of tests/model_fixtures.py, converted with
``convert_gguf_to_mlx``), where the per-token cost of the bridge is most visible. It measures:

1. Decode tokens/s. goml's ``model.generate(PROMPT, max_tokens=N, temperature=0)`` against the
   peer, ``mlx_lm.stream_generate(model, tokenizer, PROMPT, max_tokens=N, sampler=greedy)``
   iterated on the event loop's thread (it blocks the loop; nothing else runs there). The two
   alternate round-robin (the order flips every round) for ``--repeat`` rounds after a short
   untimed warm-up each. Every run must yield the same N token ids (greedy), which is checked.
   Decode tokens/s = (N - 1) / (time of the N-th token - time of the first token); TTFT = time
   from just before the call to the first token. Target (docs DESIGN.md section 6): goml >= 0.97x
   the peer's tokens/s, on the medians. The report adds the median ratio of the paired runs of
   each round and the process's CPU time per token (MLX's compute threads included), whose
   difference is the bridge's own CPU cost.
2. TTFT overhead: goml's median TTFT minus the peer's, in ms and as a fraction of the peer's.
3. Break to stop. ``mlx_lm.stream_generate`` (as ``goml_async.backends.mlx`` reaches it) is
   wrapped by a generator that records when it is called, when it yields each response and when
   it is closed. A generation of up to 1000 tokens is left with ``break`` after 5 tokens inside
   ``async with stream:``; "stop" is the time from the break to the last response produced after
   it (0 when none was). Right after leaving the ``async with``, a 1-token request follows on
   the same model: "next start" is when the worker began it (goml's paced prefill of the prompt,
   wrapped the same way, or the ``stream_generate`` call: the worker was free again) and
   "next TTFT" its time to first token (MLX may still finish the step that was in
   flight). The peer breaks out of its own ``for`` loop and closes the generator. Median over
   ``--trials`` trials each, alternating. Target: goml's stop < 100 ms median.

The script is a report, not a test: it exits 0 whether the targets are met or not, and skips with
a message where mlx, mlx-lm or the model is missing.

Run: ``python benchmarks/bench_mlx.py [--tiny | --model PATH] [--tokens N] [--repeat R]
[--trials T] [--backend asyncio|trio] [--markdown docs/benchmarks.md]``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import _report
import anyio
from _report import command_line, markdown_table, positive_int, rich_table
from rich.console import Console
from rich.markup import escape

TARGET_RATIO = 0.97
TARGET_CANCEL_MS = 100.0
PROMPT = "Once upon a time, in a small village by the sea, there lived"
WARMUP_TOKENS = 4
CANCEL_MAX_TOKENS = 1000
BREAK_AFTER = 5
CLOSE_TIMEOUT = 30.0  # seconds the worker may take to close stream_generate after a break
ROOT = Path(__file__).resolve().parents[1]
TINY_FIXTURE = ROOT / "tests" / "model_fixtures.py"
GOML = "goml MLXModel.generate"
RAW = "mlx_lm.stream_generate"
MARK_START = "<!-- bench_mlx:start -->"
MARK_END = "<!-- bench_mlx:end -->"
BLOCK = re.compile(
    r"<!-- bench_mlx:model=(?P<key>[\w.-]+):start -->\n(?P<body>.*?)\n"
    r"<!-- bench_mlx:model=(?P=key):end -->",
    re.DOTALL,
)
HEADING = "## MLX backend (bench_mlx.py)"
INTRO = (
    "Every benchmark prints a ratio against a peer measured in the same run. "
    "Regenerate with `nox -s bench`."
)
SECTION_NOTES = (
    "- Each model below is one run of the script, in one process: goml = `MLXModel.generate` "
    "(worker thread, zero-buffer hand-over to the event loop); raw = `mlx_lm.stream_generate` "
    "iterated directly on the event loop's thread, same folder loaded separately with "
    "`mlx_lm.load`, greedy in both, the same token ids checked run by run.\n"
    "- tok/s = decode rate, (N - 1) tokens over the time from the first to the N-th token; TTFT "
    "from just before the call; CPU = the whole process's CPU time per token (MLX's compute "
    "threads included); ratio = goml / raw, the target applies to the medians; paired = median "
    "over the rounds of each round's goml/raw.\n"
    "- Break to stop: `mlx_lm.stream_generate` is wrapped to timestamp its calls, responses and "
    "close. stop = from `break` to the last response produced after it (0 if none); closed = to "
    "the generator's close; back = until control returns after `async with stream`; next start "
    "= until the worker begins the following 1-token request (goml's paced prefill or its "
    "`stream_generate` call); next TTFT = that "
    "request's time to first token (the step MLX had in flight finishes first)."
)
STREAM_COLUMNS = (
    "client",
    "best tok/s",
    "median tok/s",
    "best TTFT ms",
    "median TTFT ms",
    "CPU us/token",
    "ratio (best)",
    "ratio (median)",
    "paired",
)
CANCEL_COLUMNS = (
    "client",
    "stop median ms",
    "stop p90 ms",
    "stop max ms",
    "tokens after break",
    "closed ms",
    "back ms",
    "next start ms",
    "next TTFT ms",
)

Responses = Generator[Any, None, None]  # what mlx_lm.stream_generate returns


# -- prerequisites and the model folder -----------------------------------------------------------


def machine_line() -> str:
    return _report.machine_line(
        ("anyio", "trio", "mlx", "mlx-lm", "goml_async"), f"MLX {mlx_device()}"
    )


def missing_mlx() -> str | None:
    """Why mlx or mlx-lm cannot be used here, or None when both import."""
    for module in ("mlx", "mlx_lm"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install 'goml_async[mlx]')"
    try:
        import mlx.core  # noqa: F401  (pip install mlx without [cpu] fails here on Linux)
    except ImportError as exc:
        return f"mlx does not import: {exc} (on Linux: pip install 'mlx[cpu]')"
    return None


def missing_tiny() -> str | None:
    """Why ``--tiny`` cannot build its model here, or None."""
    if not TINY_FIXTURE.is_file():
        return f"{TINY_FIXTURE} is missing (--tiny needs the source checkout)"
    for module in ("pytest", "gguf", "numpy", "tokenizers"):
        if importlib.util.find_spec(module) is None:
            return f"--tiny needs {module} (pip install -e '.[dev]')"
    return None


def build_tiny(workdir: Path) -> Path:
    """The tiny random llama of the backend tests, written as GGUF and converted to MLX."""
    from goml_async.backends.mlx_convert import convert_gguf_to_mlx

    spec = importlib.util.spec_from_file_location("_bench_mlx_tiny_fixture", TINY_FIXTURE)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {TINY_FIXTURE}")
    fixture = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixture)
    gguf_path = fixture.write_tiny_gguf(workdir / "tiny-llama.gguf")
    return convert_gguf_to_mlx(gguf_path, workdir / "tiny-llama")


def default_folder(console: Console) -> Path | str:
    """The converted bundled SmolLM2 (converting it once), or why it is not available."""
    from goml_async import BackendUnavailable, ModelLoadError
    from goml_async.backends.mlx_convert import default_mlx_model

    console.print("model: the bundled SmolLM2 as float32 MLX (converted once into the cache) ...")
    try:
        return default_mlx_model()
    except (ModelLoadError, BackendUnavailable) as exc:
        return str(exc)


@dataclass(frozen=True, slots=True)
class Subject:
    """The model folder under test and how the report names it."""

    folder: Path
    key: str  # the markdown block it is recorded in
    label: str


def model_key(folder: Path) -> str:
    return re.sub(r"[^\w.-]+", "-", folder.name) or "model"


# -- the peer: mlx-lm called directly -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Peer:
    """mlx-lm's own load, called directly: the model, its tokenizer and the real functions."""

    model: Any
    tokenizer: Any
    stream_generate: Callable[..., Responses]
    sampler: Callable[[Any], Any]

    @classmethod
    def load(cls, folder: Path) -> Peer:
        import mlx_lm
        from mlx_lm.sample_utils import make_sampler

        loaded = mlx_lm.load(str(folder))
        return cls(loaded[0], loaded[1], mlx_lm.stream_generate, make_sampler(temp=0.0))

    def responses(
        self, max_tokens: int, generate: Callable[..., Responses] | None = None
    ) -> Responses:
        """``stream_generate`` over PROMPT, greedy, as goml calls it for temperature 0."""
        call = generate or self.stream_generate
        return call(self.model, self.tokenizer, PROMPT, max_tokens=max_tokens, sampler=self.sampler)


# -- one streamed reply ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamRun:
    """One timed reply: its token ids, TTFT, decode time and the process's CPU time."""

    ids: tuple[int, ...]
    ttft: float
    decode_seconds: float  # first token to the last one
    cpu: float

    @property
    def tokens_per_sec(self) -> float:
        return (len(self.ids) - 1) / self.decode_seconds if self.decode_seconds > 0 else 0.0

    @property
    def cpu_us_per_token(self) -> float:
        return self.cpu / len(self.ids) * 1e6 if self.ids else 0.0


class Clock:
    """Timestamps of one reply: the start, the first and the last token."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.first = self.last = 0.0
        self.cpu = time.process_time()
        self.start = time.perf_counter()

    def tick(self, token_id: int) -> None:
        self.last = time.perf_counter()
        if not self.ids:
            self.first = self.last
        self.ids.append(token_id)

    def run(self) -> StreamRun:
        cpu = time.process_time() - self.cpu
        return StreamRun(tuple(self.ids), self.first - self.start, self.last - self.first, cpu)


async def goml_stream(model: Any, count: int) -> StreamRun:
    clock = Clock()
    stream = model.generate(PROMPT, max_tokens=count, temperature=0)
    async with stream:
        async for token in stream:
            clock.tick(token.id)
    if stream.finish_reason != "length":
        raise RuntimeError(f"{GOML}: finish_reason {stream.finish_reason!r}, expected 'length'")
    return clock.run()


async def raw_stream(peer: Peer, count: int) -> StreamRun:
    """The peer, synchronous on the loop's thread (async only to share the round-robin)."""
    clock = Clock()
    for response in peer.responses(count):
        clock.tick(int(response.token))
    return clock.run()


def check_same_tokens(samples: dict[str, list[StreamRun]], count: int) -> tuple[int, ...]:
    """Every run of both clients yields the same ``count`` greedy token ids; returns them."""
    reference = samples[GOML][0].ids
    if len(reference) != count:
        raise RuntimeError(
            f"the model stopped after {len(reference)} of {count} tokens (end of sequence): "
            "lower --tokens or pick another --model"
        )
    for name, runs in samples.items():
        for index, run in enumerate(runs):
            if run.ids != reference:
                raise RuntimeError(f"{name}, run {index + 1}: token ids differ from goml's first")
    return reference


# -- break to stop --------------------------------------------------------------------------------


@dataclass(slots=True)
class Call:
    """One ``stream_generate`` call as the probe saw it."""

    started: float
    produced: list[float] = field(default_factory=list)
    closed: float | None = None


class Probe:
    """Stands in for ``mlx_lm.stream_generate``: timestamps each call, response and close.

    ``prefills`` timestamps each call of goml's paced prefill, which runs before
    ``stream_generate`` on the worker. Responses are appended from the worker thread; they are
    read only once the worker has moved on to the next request, so the lists are complete by
    then.
    """

    def __init__(self, real: Callable[..., Responses]) -> None:
        self.real = real
        self.calls: list[Call] = []
        self.prefills: list[float] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Responses:
        call = Call(time.perf_counter())
        self.calls.append(call)
        return self._responses(call, self.real(*args, **kwargs))

    @staticmethod
    def _responses(call: Call, responses: Responses) -> Responses:
        try:
            with contextlib.closing(responses):
                for response in responses:
                    call.produced.append(time.perf_counter())
                    yield response
        finally:
            call.closed = time.perf_counter()


@contextlib.contextmanager
def probing(backend: Any) -> Iterator[Probe]:
    """Replace the backend's ``mlx_lm.stream_generate`` by a Probe, and time its ``prefill``."""
    module = backend.mlx_lm  # patched where the backend looks it up: its mlx_lm module
    probe = Probe(module.stream_generate)
    real_prefill = backend.prefill

    def prefill(*args: Any, **kwargs: Any) -> None:
        probe.prefills.append(time.perf_counter())
        real_prefill(*args, **kwargs)

    module.stream_generate = probe
    backend.prefill = prefill
    try:
        yield probe
    finally:
        module.stream_generate = probe.real
        backend.prefill = real_prefill


@dataclass(frozen=True, slots=True)
class CancelRun:
    """One break: ms from the break to each event, and the tokens produced after it."""

    stop_ms: float
    extra_tokens: int
    closed_ms: float
    back_ms: float
    next_start_ms: float
    next_ttft_ms: float


class Marks(NamedTuple):
    """perf_counter() at the break, back after the ``async with``, and of the next request."""

    broke: float
    back: float
    next_start: float
    next_first: float


def cancel_run(client: str, probe: Probe, delivered: int, marks: Marks) -> CancelRun:
    """The CancelRun of a trial from the probe's two calls: the broken one and the next."""
    broke, back, next_start, next_first = marks
    calls = probe.calls
    if delivered != BREAK_AFTER:
        raise RuntimeError(f"{client}: the stream ended after {delivered} token(s) before break")
    if len(calls) != 2 or calls[0].closed is None:
        raise RuntimeError(f"{client}: expected 2 stream_generate calls, the first closed")
    after = [moment for moment in calls[0].produced if moment > broke]
    # The worker began the next request when it prefilled (goml) or called stream_generate.
    began = min([calls[1].started, *(moment for moment in probe.prefills if moment > broke)])
    return CancelRun(
        stop_ms=((max(after) if after else broke) - broke) * 1000,
        extra_tokens=len(after),
        closed_ms=(calls[0].closed - broke) * 1000,
        back_ms=(back - broke) * 1000,
        next_start_ms=(began - broke) * 1000,
        next_ttft_ms=(next_first - next_start) * 1000,
    )


async def goml_first_token(model: Any) -> tuple[float, float]:
    """Run a 1-token request; when it was issued and when its token arrived."""
    start = time.perf_counter()
    async with model.generate(PROMPT, max_tokens=1, temperature=0) as stream:
        async for _ in stream:
            return start, time.perf_counter()
    raise RuntimeError(f"{GOML}: the 1-token request yielded nothing")


async def goml_cancel(model: Any, probe: Probe) -> CancelRun:
    probe.calls.clear()
    probe.prefills.clear()
    delivered, broke = 0, 0.0
    stream = model.generate(PROMPT, max_tokens=CANCEL_MAX_TOKENS, temperature=0)
    async with stream:
        async for _ in stream:
            delivered += 1
            if delivered == BREAK_AFTER:
                broke = time.perf_counter()
                break
    back = time.perf_counter()
    next_start, next_first = await goml_first_token(model)
    await wait_closed(probe)
    return cancel_run(GOML, probe, delivered, Marks(broke, back, next_start, next_first))


def raw_first_token(peer: Peer, probe: Probe) -> tuple[float, float]:
    """Run a 1-token request directly; when it was issued and when its token arrived."""
    start = time.perf_counter()
    responses = peer.responses(1, probe)
    with contextlib.closing(responses):
        for _ in responses:
            return start, time.perf_counter()
    raise RuntimeError(f"{RAW}: the 1-token request yielded nothing")


async def raw_cancel(peer: Peer, probe: Probe) -> CancelRun:
    """The peer: break out of its own loop and close the generator, as ``async with`` does."""
    probe.calls.clear()
    probe.prefills.clear()
    delivered, broke = 0, 0.0
    responses = peer.responses(CANCEL_MAX_TOKENS, probe)
    with contextlib.closing(responses):
        for _ in responses:
            delivered += 1
            if delivered == BREAK_AFTER:
                broke = time.perf_counter()
                break
    back = time.perf_counter()
    next_start, next_first = raw_first_token(peer, probe)
    return cancel_run(RAW, probe, delivered, Marks(broke, back, next_start, next_first))


async def wait_closed(probe: Probe) -> None:
    """Wait until every call the probe saw is closed (the worker moved on)."""
    deadline = time.perf_counter() + CLOSE_TIMEOUT
    while any(call.closed is None for call in probe.calls):
        if time.perf_counter() > deadline:
            raise RuntimeError(f"stream_generate still open {CLOSE_TIMEOUT:g} s after a break")
        await anyio.sleep(0.001)


# -- measuring ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamSummary:
    name: str
    runs: list[StreamRun]

    @property
    def best(self) -> float:
        return max(run.tokens_per_sec for run in self.runs)

    @property
    def median(self) -> float:
        return statistics.median(run.tokens_per_sec for run in self.runs)

    @property
    def ttft_ms(self) -> float:
        return statistics.median(run.ttft for run in self.runs) * 1000

    @property
    def cpu_us(self) -> float:
        return statistics.median(run.cpu_us_per_token for run in self.runs)

    def cells(self, peer: StreamSummary) -> tuple[str, ...]:
        return (
            self.name,
            f"{self.best:,.1f}",
            f"{self.median:,.1f}",
            f"{min(run.ttft for run in self.runs) * 1000:,.1f}",
            f"{self.ttft_ms:,.1f}",
            f"{self.cpu_us:,.0f}",
            f"{self.best / peer.best:.3f}x",
            f"{self.median / peer.median:.3f}x",
            f"{paired_ratio(self, peer):.3f}x",
        )


def paired_ratio(mine: StreamSummary, peer: StreamSummary) -> float:
    """Median over the rounds of mine/peer tokens/s, each round's two runs side by side."""
    pairs = zip(mine.runs, peer.runs, strict=True)
    return statistics.median(a.tokens_per_sec / b.tokens_per_sec for a, b in pairs)


@dataclass(frozen=True, slots=True)
class CancelSummary:
    name: str
    runs: list[CancelRun]

    def median(self, metric: str) -> float:
        return float(statistics.median(getattr(run, metric) for run in self.runs))

    @property
    def stops(self) -> list[float]:
        return [run.stop_ms for run in self.runs]

    def cells(self) -> tuple[str, ...]:
        extra = [run.extra_tokens for run in self.runs]
        return (
            self.name,
            f"{self.median('stop_ms'):,.1f}",
            f"{_report.percentile(self.stops, 90):,.1f}",
            f"{max(self.stops):,.1f}",
            f"{statistics.median(extra):g} (max {max(extra)})",
            f"{self.median('closed_ms'):,.1f}",
            f"{self.median('back_ms'):,.2f}",
            f"{self.median('next_start_ms'):,.1f}",
            f"{self.median('next_ttft_ms'):,.1f}",
        )


@dataclass(frozen=True, slots=True)
class Results:
    subject: Subject
    info: str
    tokens: tuple[int, ...]
    goml: StreamSummary
    raw: StreamSummary
    cancel: list[CancelSummary]


async def measure_streaming(
    model: Any, peer: Peer, count: int, repeat: int
) -> tuple[StreamSummary, StreamSummary, tuple[int, ...]]:
    samples = await _report.round_robin(
        {GOML: lambda: goml_stream(model, count), RAW: lambda: raw_stream(peer, count)},
        repeat,
        warmup={
            GOML: lambda: goml_stream(model, WARMUP_TOKENS),
            RAW: lambda: raw_stream(peer, WARMUP_TOKENS),
        },
    )
    tokens = check_same_tokens(samples, count)
    return StreamSummary(GOML, samples[GOML]), StreamSummary(RAW, samples[RAW]), tokens


async def measure_cancel(model: Any, peer: Peer, trials: int) -> list[CancelSummary]:
    from goml_async.backends import mlx

    with probing(mlx) as probe:
        samples = await _report.round_robin(
            {GOML: lambda: goml_cancel(model, probe), RAW: lambda: raw_cancel(peer, probe)},
            trials,
            warmup={},
        )
    return [CancelSummary(name, runs) for name, runs in samples.items()]


def describe(model: Any, folder: Path) -> str:
    """The model's architecture and sizes, with its weights' size on disk."""
    info = model.info()
    weights = sum(path.stat().st_size for path in folder.glob("*.safetensors"))
    return (
        f"{info.architecture}, {info.num_layers} layers, hidden {info.hidden_size}, vocab "
        f"{info.vocab_size:,}, {weights / 1e6:,.1f} MB of safetensors"
    )


async def run_all(args: argparse.Namespace, subject: Subject, console: Console) -> Results:
    from goml_async.backends.mlx import load_mlx_model

    started = time.perf_counter()
    peer = await anyio.to_thread.run_sync(Peer.load, subject.folder)
    async with await load_mlx_model(subject.folder) as model:
        info = describe(model, subject.folder)
        console.print(f"loaded {subject.label} twice in {time.perf_counter() - started:.2f} s")
        console.print(f"streaming: {args.repeat} round(s) of {args.tokens} tokens ...")
        goml, raw, tokens = await measure_streaming(model, peer, args.tokens, args.repeat)
        console.print(f"break to stop: {args.trials} trial(s) per client ...")
        cancel = await measure_cancel(model, peer, args.trials)
    return Results(subject, info, tokens, goml, raw, cancel)


# -- reporting ------------------------------------------------------------------------------------


def verdict(passed: bool, text: str) -> str:
    return f"{'PASS' if passed else 'FAIL'}: {text}"


def stream_verdict(results: Results) -> str:
    goml, raw = results.goml, results.raw
    ratio = goml.median / raw.median
    return verdict(
        ratio >= TARGET_RATIO,
        f"decode goml/raw mlx-lm = {ratio:.3f}x median tokens/s ({goml.median:,.1f} vs "
        f"{raw.median:,.1f}; best runs {goml.best / raw.best:.3f}x, paired rounds "
        f"{paired_ratio(goml, raw):.3f}x); target >= {TARGET_RATIO}x",
    )


def ttft_line(results: Results) -> str:
    goml, raw = results.goml.ttft_ms, results.raw.ttft_ms
    cpu = results.goml.cpu_us - results.raw.cpu_us
    return (
        f"TTFT overhead: goml {goml:,.2f} ms - raw {raw:,.2f} ms = {goml - raw:+,.2f} ms median "
        f"({(goml - raw) / raw:+.1%}); goml's extra CPU time {cpu:+,.0f} us/token"
    )


def cancel_verdict(results: Results) -> str:
    goml, raw = results.cancel
    stop = goml.median("stop_ms")
    p90 = _report.percentile(goml.stops, 90)
    return verdict(
        stop < TARGET_CANCEL_MS,
        f"break to stop, goml median {stop:.1f} ms (p90 {p90:.1f} ms, "
        f"median {goml.median('extra_tokens'):g} token(s) produced after the break; raw "
        f"mlx-lm {raw.median('stop_ms'):.1f} ms); target < {TARGET_CANCEL_MS:g} ms median",
    )


def idle_verdict(results: Results) -> str:
    goml, raw = results.cancel
    start = goml.median("next_start_ms")
    return verdict(
        start < TARGET_CANCEL_MS,
        f"worker free after a break: the next request started {start:.1f} ms after it "
        f"(median; raw {raw.median('next_start_ms'):.1f} ms), its TTFT "
        f"{goml.median('next_ttft_ms'):,.1f} ms vs {results.goml.ttft_ms:,.1f} ms undisturbed "
        f"(raw {raw.median('next_ttft_ms'):,.1f} vs {results.raw.ttft_ms:,.1f} ms)",
    )


def verdicts(results: Results) -> list[str]:
    return [stream_verdict(results), cancel_verdict(results), idle_verdict(results)]


def mlx_device() -> str:
    try:
        import mlx.core as mx
    except ImportError:
        return "no mlx"
    return str(mx.default_device())


def stream_rows(results: Results) -> list[tuple[str, ...]]:
    return [results.goml.cells(results.raw), results.raw.cells(results.raw)]


def cancel_rows(results: Results) -> list[tuple[str, ...]]:
    return [summary.cells() for summary in results.cancel]


def stream_title(args: argparse.Namespace) -> str:
    return (
        f"{args.backend}: decoding {args.tokens} tokens (greedy), best/median of {args.repeat} "
        "round-robin runs"
    )


def cancel_title(args: argparse.Namespace) -> str:
    return (
        f"{args.backend}: break to stop, {args.trials} trials (break after {BREAK_AFTER} of up "
        f"to {CANCEL_MAX_TOKENS} tokens), ms from the break"
    )


def markdown_block(results: Results, args: argparse.Namespace) -> str:
    """This run's block of the section: the model, the machine, both tables and the verdicts."""
    subject = results.subject
    parts = [
        f"### {subject.label}",
        "",
        f"- Model: `{subject.folder.name}` ({results.info})",
        f"- Machine: {machine_line()}",
        f"- Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Command: `{command_line()}`",
        "",
        f"#### {stream_title(args)}",
        "",
        markdown_table(STREAM_COLUMNS, stream_rows(results)),
        "",
        f"#### {cancel_title(args)}",
        "",
        markdown_table(CANCEL_COLUMNS, cancel_rows(results)),
        "",
        f"- {ttft_line(results)}",
    ]
    parts += [f"- **{line}**" for line in verdicts(results)]
    return "\n".join(parts)


def render_section(blocks: dict[str, str]) -> str:
    inner = [
        f"<!-- bench_mlx:model={key}:start -->\n{body}\n<!-- bench_mlx:model={key}:end -->"
        for key, body in blocks.items()
    ]
    return "\n\n".join([HEADING, SECTION_NOTES, *inner])


def write_markdown(path: Path, key: str, block: str) -> None:
    """Create or replace this model's block in the delimited section of ``path``.

    Everything outside the section is kept, and so are the other models' blocks inside it
    (the bundled SmolLM2 from ``nox -s bench``, the tiny model from ``--tiny``).
    """
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{INTRO}\n"
    start = text.find(MARK_START)
    end = text.find(MARK_END, start) if start != -1 else -1
    old = text[start + len(MARK_START) : end] if end != -1 else ""
    blocks = {match["key"]: match["body"] for match in BLOCK.finditer(old)}
    blocks[key] = block
    section = f"{MARK_START}\n{render_section(blocks)}\n{MARK_END}"
    if end != -1:
        text = text[:start] + section + text[end + len(MARK_END) :]
    else:
        separator = "" if text.endswith("\n\n") else "\n" if text.endswith("\n") else "\n\n"
        text = f"{text}{separator}{section}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_results(results: Results, args: argparse.Namespace) -> Path:
    """The decode ratio and the break-to-stop latency, and both clients' tokens/s.

    The default model's run is ``bench_mlx.json``; another model's is ``bench_mlx-KEY.json``.
    """
    subject, goml, raw = results.subject, results.goml, results.raw
    goml_cancel, raw_cancel = results.cancel
    decode_ratio = goml.median / raw.median
    stop = goml_cancel.median("stop_ms")
    measures = [
        _report.Measure(
            measure=f"decoding {args.tokens} tokens ({args.backend})",
            unit="tokens/s",
            goml=goml.median,
            peer=raw.median,
            peer_name=RAW,
            ratio=decode_ratio,
            target=f">= {TARGET_RATIO}x",
            passed=decode_ratio >= TARGET_RATIO,
        ),
        _report.Measure(
            measure="break to stop, median",
            unit="ms",
            goml=stop,
            peer=raw_cancel.median("stop_ms"),
            peer_name=RAW,
            ratio=None,
            target=f"< {TARGET_CANCEL_MS:g} ms",
            passed=stop < TARGET_CANCEL_MS,
        ),
    ]
    throughput = [
        _report.Throughput(
            f"MLX bridge: decoding {args.tokens} tokens, {subject.label} ({args.backend})",
            GOML,
            {GOML: goml.median, RAW: raw.median},
        )
    ]
    name = "bench_mlx" if subject.key == "smollm2" else f"bench_mlx-{subject.key}"
    return _report.write_results(
        name,
        title="MLX backend" if subject.key == "smollm2" else f"MLX backend ({subject.key})",
        heading=subject.label,
        machine=machine_line(),
        measures=measures,
        throughput=throughput,
    )


def print_results(console: Console, results: Results, args: argparse.Namespace) -> None:
    console.print(f"Model: {results.subject.folder} ({results.info})")
    console.print(rich_table(stream_title(args), STREAM_COLUMNS, stream_rows(results)))
    console.print(rich_table(cancel_title(args), CANCEL_COLUMNS, cancel_rows(results)))
    console.print(ttft_line(results))
    for line in verdicts(results):
        console.print(line)


# -- command line ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", type=Path, help="an mlx-lm model folder (default: SmolLM2)")
    which.add_argument(
        "--tiny", action="store_true", help="a tiny random llama, where per-token costs show"
    )
    parser.add_argument(
        "--tokens", type=positive_int, help="tokens per reply (default 64; 256 with --tiny)"
    )
    parser.add_argument(
        "--repeat", type=positive_int, help="streaming rounds (default 3; 10 with --tiny)"
    )
    parser.add_argument("--trials", type=positive_int, default=10, help="break-to-stop trials")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument(
        "--markdown",
        type=Path,
        help="also write/replace this model's results in this file, and the key numbers in "
        "benchmarks/results/bench_mlx[-MODEL].json",
    )
    args = parser.parse_args(argv)
    if args.model is not None and not (args.model / "config.json").is_file():
        parser.error(f"--model {args.model}: not an mlx-lm folder (no config.json)")
    args.tokens = args.tokens or (256 if args.tiny else 64)
    args.repeat = args.repeat or (10 if args.tiny else 3)
    if args.tokens < 2:
        parser.error("--tokens must be >= 2 (the decode rate needs a first and a last token)")
    return args


def choose_subject(args: argparse.Namespace, workdir: Path, console: Console) -> Subject | str:
    """The model folder to measure, or why there is none (the script then skips)."""
    if args.model is not None:
        folder = args.model.resolve()
        return Subject(folder, model_key(folder), f"{folder.name} (--model)")
    if args.tiny:
        missing = missing_tiny()
        if missing is not None:
            return missing
        console.print("model: building the tiny random llama of the backend tests ...")
        return Subject(build_tiny(workdir), "tiny", "tiny random llama (--tiny)")
    found = default_folder(console)
    if isinstance(found, str):
        return found
    return Subject(found, "smollm2", "SmolLM2-135M-Instruct, float32 MLX (default)")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # mlx-lm asks the Hugging Face hub about local folders unless told it is offline.
    os.environ["HF_HUB_OFFLINE"] = "1"
    # Rich falls back to 80 columns when piped (nox, CI logs); the tables need more.
    console = Console(width=None if sys.stdout.isatty() else 180)
    console.print(f"Machine: {machine_line()}")
    missing = missing_mlx()
    if missing is not None:
        console.print(f"[yellow]skipped: {escape(missing)}[/]")
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-mlx-") as workdir:
        subject = choose_subject(args, Path(workdir), console)
        if isinstance(subject, str):
            console.print(f"[yellow]skipped: {escape(subject)}[/]")
            return 0
        results = anyio.run(run_all, args, subject, console, backend=args.backend)
    print_results(console, results, args)
    if args.markdown is not None:
        write_markdown(args.markdown, subject.key, markdown_block(results, args))
        console.print(f"wrote the {subject.key} block of the bench_mlx section of {args.markdown}")
        console.print(f"wrote {write_results(results, args)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

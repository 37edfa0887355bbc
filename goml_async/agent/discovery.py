"""Finding adapter checkpoints: the model-family table and discovery over a transport.

The layout on the training host::

    {adapter_base}/adapters-27b-v2/0000100_adapters.safetensors
    {adapter_base}/adapters-27b-v2/adapter_config.json
    {adapter_base}/adapters-15k/gemma-3-12b/0000050_adapters.safetensors

A directory's name picks the model family (:data:`MODEL_FAMILIES`, first prefix wins), which
gives every checkpoint its model tag, label and run id (:func:`adapter_meta`).

Example:
    >>> adapter_meta("adapters-27b-v2")
    ('gemma-3-27b', 'G27-v2', '27b-v2')
"""

from __future__ import annotations

import logging
import posixpath
import re
import shlex
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from ..errors import ConfigError, TransportError
from .types import Checkpoint, RemoteTransport

__all__ = [
    "ADAPTER_SUFFIX",
    "MODEL_FAMILIES",
    "ModelFamily",
    "adapter_meta",
    "checkpoint_from_file",
    "discover_checkpoints",
    "iter_checkpoints",
]

logger = logging.getLogger(__name__)

#: Checkpoint files end with this (``0000100_adapters.safetensors``).
ADAPTER_SUFFIX = "_adapters.safetensors"

_DIGITS = re.compile(r"\d+")


@dataclass(frozen=True, slots=True)
class ModelFamily:
    """One row of :data:`MODEL_FAMILIES`: a directory-name prefix, its model tag and label."""

    prefix: str
    tag: str
    short: str


#: Directory prefix (after ``adapters-``) -> model tag and short label. Order matters: the
#: first prefix that matches wins (so ``27b-`` before ``27b``, ``15k/gemma-3-12b`` before
#: ``15k/gemma-3-1b``).
MODEL_FAMILIES: tuple[ModelFamily, ...] = (
    ModelFamily("deepseek-r1-7b", "deepseek-r1-7b", "R1"),
    ModelFamily("27b-", "gemma-3-27b", "G27"),
    ModelFamily("27b", "gemma-3-27b", "G27"),
    ModelFamily("15k/gemma-3-27b", "gemma-3-27b", "G27"),
    ModelFamily("15k/gemma-3-12b", "gemma-3-12b", "G12"),
    ModelFamily("15k/gemma-3-1b", "gemma-3-1b", "G1"),
    ModelFamily("12b", "gemma-3-12b", "G12"),
    ModelFamily("1b-", "gemma-3-1b", "G1"),
    ModelFamily("1b", "gemma-3-1b", "G1"),
    ModelFamily("4b", "gemma-3-4b", "G4"),
    ModelFamily("vi-12b", "gemma-3-12b", "Vi12"),
    ModelFamily("vi", "gemma-3-1b", "Vi1"),
    ModelFamily("gpt-oss", "gpt-oss-20b", "GPT"),
    ModelFamily("lem-gpt-oss", "gpt-oss-20b", "LGPT"),
    ModelFamily("bench-1b", "gemma-3-1b", "B1"),
    ModelFamily("book", "gemma-3-27b", "Book"),
    ModelFamily("cross", "gemma-3-12b", "Cross"),
)


def adapter_meta(dirname: str) -> tuple[str, str, str]:
    """The model tag, short label prefix and run-id stem of an adapter directory.

    ``dirname`` is relative to the adapter base. A leading ``adapters-`` is dropped; the
    first family whose prefix starts the rest gives the tag, and the rest after the prefix
    (leading dashes dropped) is the variant: the label is ``short`` for no variant ("base"),
    else ``short-variant``; the stem is the name with ``/`` replaced by ``-``. With no match,
    the tag and stem are the name and the label is its first 10 characters.

    Example:
        >>> adapter_meta("adapters-15k/gemma-3-12b")
        ('gemma-3-12b', 'G12', '15k-gemma-3-12b')
        >>> adapter_meta("adapters-mystery-run-42")
        ('mystery-run-42', 'mystery-ru', 'mystery-run-42')
    """
    name = dirname.removeprefix("adapters-")
    for family in MODEL_FAMILIES:
        if name.startswith(family.prefix):
            variant = name[len(family.prefix) :].lstrip("-") or "base"
            label = family.short if variant == "base" else f"{family.short}-{variant}"
            return family.tag, label, name.replace("/", "-")
    return name, name[:10], name


def checkpoint_from_file(
    adapter_base: str, remote_dir: str, filename: str, mtime: float = 0.0
) -> Checkpoint:
    """The :class:`Checkpoint` of one adapter file.

    The iteration is the first run of digits in ``filename``; ``dirname`` is ``remote_dir``
    relative to ``adapter_base``.

    Raises:
        ConfigError: ``filename`` has no digits (no iteration).

    Example:
        >>> name = "0000100_adapters.safetensors"
        >>> cp = checkpoint_from_file("/data", "/data/adapters-27b-v2", name)
        >>> cp.label, cp.run_id, cp.iteration
        ('G27-v2 @0000100', '27b-v2-capability-auto', 100)
    """
    digits = _DIGITS.search(filename)
    if digits is None:
        raise ConfigError("filename", f"no iteration number in {filename!r}")
    remote_dir = _strip_slash(remote_dir)
    dirname = posixpath.relpath(remote_dir, _strip_slash(adapter_base))
    tag, short, stem = adapter_meta(dirname)
    return Checkpoint(
        remote_dir=remote_dir,
        filename=filename,
        dirname=dirname,
        iteration=int(digits.group()),
        model_tag=tag,
        label=f"{short} @{digits.group()}",
        run_id=f"{stem}-capability-auto",
        mtime=mtime,
    )


async def iter_checkpoints(
    transport: RemoteTransport, base_dir: str, filter: str | None = None
) -> AsyncGenerator[Checkpoint, None]:
    """Yield the checkpoints under ``base_dir`` as they are found.

    Each checkpoint is yielded as soon as its directory is listed and its file's mtime read,
    so the first one arrives before the rest of the tree is walked. Steps:
    list ``base_dir/adapters-{filter}*``; a directory with ``gemma-3-*`` subdirectories is
    replaced by them; list each directory's ``*_adapters.safetensors`` (a directory whose
    listing fails is skipped); read each file's mtime.

    Args:
        transport: where the checkpoints are (SSH or local).
        base_dir: the adapter base folder on the transport's side.
        filter: only directories whose name starts with ``adapters-{filter}``.

    Raises:
        TransportError: the transport failed, or ``base_dir`` is not a directory.

    Example:
        >>> async def show(transport: RemoteTransport) -> None:
        ...     async for checkpoint in iter_checkpoints(transport, "/data/lem", filter="27b"):
        ...         print(checkpoint.label, checkpoint.remote_path)
    """
    base = _strip_slash(base_dir)
    root = "" if base == "/" else shlex.quote(base)
    pattern = "adapters-" + (shlex.quote(filter) if filter else "")
    listing = await transport.run(f"LC_ALL=C ls -d {root}/{pattern}* 2>/dev/null")
    if not listing.ok:
        # ls also fails when the glob matches nothing: that is an empty base, not an error.
        probe = await transport.run(f"test -d {shlex.quote(base)}")
        if not probe.ok:
            raise TransportError(f"the adapter base {base!r} is not a directory on {transport!r}")
        return
    for directory in _lines(listing.stdout):
        subdirs = await transport.run(
            f"LC_ALL=C ls -d {shlex.quote(directory)}/gemma-3-* 2>/dev/null"
        )
        for folder in _lines(subdirs.stdout) if subdirs.ok else [directory]:
            files = await transport.run(
                f"LC_ALL=C ls {shlex.quote(folder)}/*{ADAPTER_SUFFIX} 2>/dev/null"
            )
            if not files.ok:
                continue
            for path in _lines(files.stdout):
                filename = posixpath.basename(path)
                if not _DIGITS.search(filename):
                    logger.warning("skipping %s: no iteration number in its name", path)
                    continue
                mtime = await transport.mtime(path)
                yield checkpoint_from_file(base, folder, filename, mtime)


async def discover_checkpoints(
    transport: RemoteTransport, base_dir: str, filter: str | None = None
) -> list[Checkpoint]:
    """Every checkpoint under ``base_dir``, sorted by dirname, then iteration.

    Example:
        >>> async def count(transport: RemoteTransport) -> int:
        ...     return len(await discover_checkpoints(transport, "/data/lem"))
    """
    found = [checkpoint async for checkpoint in iter_checkpoints(transport, base_dir, filter)]
    return sorted(found, key=lambda checkpoint: (checkpoint.dirname, checkpoint.iteration))


def _strip_slash(path: str) -> str:
    return path.rstrip("/") or "/"


def _lines(output: str) -> list[str]:
    return [line.rstrip("/") for line in output.splitlines() if line.strip()]

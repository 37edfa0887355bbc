"""A GGUF file's byte-level BPE vocabulary as Hugging Face ``tokenizer.json`` files.

Part of the GGUF -> MLX conversion (:mod:`goml_async.convert.gguf_to_mlx`): the vocabulary,
merges, special tokens and chat template are read from the GGUF's metadata and rebuilt as a
``tokenizers.Tokenizer`` plus the ``tokenizer_config.json`` that mlx-lm reads.
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import ModelLoadError

__all__ = ["gguf_tokenizer"]

logger = logging.getLogger(__name__)

# GGUF token types (llama.cpp's llama_token_type)
_CONTROL, _USER_DEFINED = 3, 4
# llama.cpp's Llama 3 pre-tokenizer split, as in Meta's tokenizer.json
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _text(token: Any) -> str:
    return token if isinstance(token, str) else bytes(token).decode("utf-8", errors="replace")


def _pre_tokenizer(name: str) -> Any:
    """The Hugging Face pre-tokenizer for llama.cpp's pre-tokenizer ``name``."""
    from tokenizers import Regex, pre_tokenizers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if name in ("gpt-2", "default", ""):
        return byte_level
    if name == "smollm":  # llama.cpp: "\p{N}" first, then the GPT-2 split
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if name in ("llama-bpe", "llama3"):
        split = pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated")
        bytes_only = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        return pre_tokenizers.Sequence([split, bytes_only])
    logger.warning("pre-tokenizer %r is approximated with GPT-2 byte-level splitting", name)
    return byte_level


def gguf_tokenizer(
    path: str, fields: dict[str, Any], config: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """tokenizer.json (as a ``tokenizers.Tokenizer``) and tokenizer_config.json."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors

    tokens = [_text(token) for token in fields["tokenizer.ggml.tokens"]]
    types = list(fields.get("tokenizer.ggml.token_type") or [1] * len(tokens))
    merges: list[tuple[str, str]] = []
    for merge in fields.get("tokenizer.ggml.merges") or []:
        left, space, right = _text(merge).partition(" ")
        if not space:
            raise ModelLoadError(path, f"malformed BPE merge {_text(merge)!r} (no space)")
        merges.append((left, right))
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ModelLoadError(path, "the GGUF vocabulary has duplicate tokens")
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None))
    tokenizer.pre_tokenizer = _pre_tokenizer(str(fields.get("tokenizer.ggml.pre", "")))
    tokenizer.decoder = decoders.ByteLevel()
    added = [
        AddedToken(tokens[i], special=kind == _CONTROL, normalized=False)
        for i, kind in enumerate(types)
        if kind in (_CONTROL, _USER_DEFINED)
    ]
    tokenizer.add_special_tokens([a for a in added if a.special])
    tokenizer.add_tokens([a for a in added if not a.special])

    def token(key: str) -> str | None:
        index = fields.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[int(index)] if index is not None and 0 <= int(index) < len(tokens) else None

    bos, eos = token("bos"), token("eos")
    add_bos = bool(fields.get("tokenizer.ggml.add_bos_token", False)) and bos is not None
    add_eos = bool(fields.get("tokenizer.ggml.add_eos_token", False)) and eos is not None
    byte_level = processors.ByteLevel(trim_offsets=False)
    if add_bos or add_eos:
        # What llama.cpp does when it tokenizes a prompt: BOS first and/or EOS last.
        first = [f"{bos}:0"] if add_bos else []
        last = [f"{eos}:0"] if add_eos else []
        specials = {t: vocab[t] for t in (bos if add_bos else None, eos if add_eos else None) if t}
        template = processors.TemplateProcessing(
            single=[*first, "$A:0", *last],
            pair=[*first, "$A:0", *last, *first, "$B:1", *last],
            special_tokens=list(specials.items()),
        )
        tokenizer.post_processor = processors.Sequence([byte_level, template])
    else:
        tokenizer.post_processor = byte_level

    tokenizer_config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": eos,
        "pad_token": token("padding") or eos,
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "clean_up_tokenization_spaces": False,
        "model_max_length": config["max_position_embeddings"],
    }
    unknown = token("unknown")
    if unknown is not None:
        tokenizer_config["unk_token"] = unknown
    template_text = fields.get("tokenizer.chat_template")
    if template_text:
        tokenizer_config["chat_template"] = str(template_text)
    return tokenizer, tokenizer_config

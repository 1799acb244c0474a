"""Instruction and text segments for the omni-modal sequence (numpy + tokenizers only, no torch).

The model's sequence is ``[CLS] instruction [audio] [vision] text [SEP]``: the
instruction segment (``[CLS] Instruct: ... Input:``) and the text segment are
tokenised separately, without special tokens, so that the media tokens can sit
between them. The same tokenizer.json serves both backbones: the ``paper``
Qwen2-shaped backbone has no packaged Qwen tokenizer, so it reuses MiniLM's
WordPiece vocabulary (30,522 ids) and sets its ``vocab_size`` to match.
Training and the Triton python backend share this code.
"""

from __future__ import annotations

from os import PathLike

import numpy as np
from tokenizers import Tokenizer

TEXT_FIELDS = ("title", "ocr", "asr", "author", "tags")


def instruction_prefix(instruction: str) -> str:
    """The words that open a sample, before its media: ``Instruct: <instruction> Input:``."""
    instruction = " ".join(str(instruction or "").split())
    return f"Instruct: {instruction} Input:" if instruction else ""


class SegmentTokenizer:
    """Tokenise instructions and texts into right-padded (ids, mask) int64 arrays."""

    def __init__(self, tokenizer_file: str | PathLike, max_text_length: int, max_instruction_length: int = 48):
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.max_text_length = int(max_text_length)
        self.max_instruction_length = int(max_instruction_length)
        self.cls_id = self._special("[CLS]", "<s>")
        self.sep_id = self._special("[SEP]", "</s>")
        self.pad_id = self.tokenizer.token_to_id("[PAD]") or 0
        self.vocab_size = self.tokenizer.get_vocab_size()

    def _special(self, *names: str) -> int:
        for name in names:
            tid = self.tokenizer.token_to_id(name)
            if tid is not None:
                return tid
        raise ValueError(f"tokenizer has none of the special tokens {names}; use a BERT-style tokenizer.json")

    def _pad(self, rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        width = max(1, max((len(r) for r in rows), default=1))
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
        return ids, mask

    def _encode(self, texts: list[str], limit: int) -> list[list[int]]:
        encs = self.tokenizer.encode_batch([t or "" for t in texts], add_special_tokens=False)
        return [e.ids[:limit] if t else [] for e, t in zip(encs, texts)]

    def instructions(self, instructions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``[CLS] Instruct: ... Input:`` per sample (just ``[CLS]`` for an empty instruction)."""
        prefixes = [instruction_prefix(i) for i in instructions]
        return self._pad([[self.cls_id, *ids] for ids in self._encode(prefixes, self.max_instruction_length - 1)])

    def texts(self, texts: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
        """Text tokens per sample, truncated to ``max_text_length``; None/"" gives an empty row (no text)."""
        return self._pad(self._encode([" ".join(str(t).split()) if t else "" for t in texts], self.max_text_length))


def join_fields(fields: dict[str, str | None]) -> str:
    """Clean, de-duplicate (case-insensitive, order kept) and join text fields into one text."""
    seen: set[str] = set()
    parts = []
    for name in TEXT_FIELDS + tuple(k for k in fields if k not in TEXT_FIELDS):
        value = " ".join(str(fields.get(name) or "").split())
        if value and value.lower() not in seen:
            seen.add(value.lower())
            parts.append(value)
    return " | ".join(parts)


def drop_text_fields(fields: dict[str, str | None], p: float, rng: np.random.Generator) -> dict[str, str | None]:
    """Training-time field dropout: drop each non-empty field with chance ``p``, never all of them."""
    present = [k for k, v in fields.items() if v and str(v).strip()]
    if not present or p <= 0:
        return dict(fields)
    keep = {k for k in present if rng.random() >= p} or {present[int(rng.integers(len(present)))]}
    return {k: (v if k in keep else None) for k, v in fields.items()}

"""Text preprocessing: instruction templates and tokenisation (numpy + tokenizers only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer


def with_instruction(instruction: str, text: str) -> str:
    """Wrap ``text`` in its task instruction, the same way on both sides of training and serving."""
    text = " ".join(str(text).split())
    return f"Instruct: {instruction}\nInput: {text}" if instruction else text


class TextPreprocessor:
    """Tokenise raw strings into padded ``input_ids`` / ``attention_mask`` (int64)."""

    def __init__(self, tokenizer_file: str | Path, max_length: int):
        self.max_length = int(max_length)
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.enable_truncation(max_length=self.max_length)
        pad_id = self.tokenizer.token_to_id("[PAD]")
        self.tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")

    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        if not texts:
            raise ValueError("no text to tokenise: send at least one non-empty string")
        encodings = self.tokenizer.encode_batch([str(t) for t in texts])
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        return {"input_ids": ids, "attention_mask": mask}

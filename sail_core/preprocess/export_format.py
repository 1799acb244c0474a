"""The export format: what ``export.json`` says about an export folder (no torch, no numpy).

One typed record, written by ``sail export`` (:mod:`sail_core.export.onnx`) and
read by the Triton backend, promotion and the serving benchmark. It lives in
the preprocessing layer because both sides already share that layer: the
Triton model-version folder carries a copy of it.

An export folder holds::

    model.onnx                 the encoder on precomputed frozen features -> ``embedding`` (B, H), L2-normalised
    vision_encoder.onnx        the frozen vision tower: ``pixels`` (N, 3, S, S) -> ``features``
    speech_melspectrogram.onnx, speech_embedding.onnx
                               the frozen speech models: WAV -> 96-d
    tokenizer.json             the backbone's tokenizer
    export.json                this record
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

FORMAT_VERSION = 2
FORMAT = f"sail-embedding-onnx/{FORMAT_VERSION}"
# Earlier formats with the same fields, still served. (The text-only "sail-embedding-onnx/1" is not.)
COMPATIBLE_FORMATS = (FORMAT, "sail-omni-onnx/1")

META_FILE = "export.json"
ONNX_FILE = "model.onnx"
VISION_FILE = "vision_encoder.onnx"
SPEECH_FILES = ("speech_melspectrogram.onnx", "speech_embedding.onnx")
TOKENIZER_FILE = "tokenizer.json"
OUTPUT_NAME = "embedding"


class ExportFormatError(ValueError):
    """A folder is not a complete export of a format this code can serve."""


@dataclass
class ExportMeta:
    """The contents of ``export.json``. Field names are the JSON keys."""

    hidden_size: int
    max_length: int
    max_instruction_length: int
    matryoshka_dims: list[int]
    image_size: int
    vision_feature_shape: list[int]
    keyframes: int
    max_frames: int
    audio_dim: int
    audio_chunk_seconds: float
    instructions: dict
    instruction_defaults: dict
    inputs: list[str]
    backbone: str = "minilm"
    vision_encoder: str = "efficientnet_lite0"
    audio_encoder: str = "speech_embedding"
    audio_sample_rate: int = 16000
    format: str = FORMAT
    onnx_file: str = ONNX_FILE
    vision_file: str = VISION_FILE
    speech_files: list[str] = field(default_factory=lambda: list(SPEECH_FILES))
    tokenizer_file: str = TOKENIZER_FILE
    output: str = OUTPUT_NAME
    vision_input: str = "pixels"
    vision_output: str = "features"
    normalised: bool = True
    opset: int = 18
    exporter: str = ""
    torch_version: str = ""
    parity: dict = field(default_factory=dict)
    vision_max_rel_diff: float = 0.0
    max_abs_diff: float = 0.0
    parity_tolerance: float = 1e-4
    parity_ok: bool = False
    export_seconds: float = 0.0
    encoder_export_seconds: float = 0.0
    parity_seconds: float = 0.0

    @property
    def files(self) -> list[str]:
        """Every file of the export folder, ``export.json`` included."""
        return [self.onnx_file, self.vision_file, *self.speech_files, self.tokenizer_file, META_FILE]

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "files": self.files}

    @classmethod
    def from_dict(cls, data: dict, where: str = META_FILE) -> "ExportMeta":
        fmt = data.get("format")
        if fmt not in COMPATIBLE_FORMATS:
            raise ExportFormatError(
                f"{where}: export format {fmt!r} cannot be served by this version (it serves "
                f"{', '.join(COMPATIBLE_FORMATS)}); export the model again with `sail export`")
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                   and f.name not in data]
        if missing:
            raise ExportFormatError(f"{where}: missing keys {', '.join(missing)}; export the model again")
        return cls(**{k: v for k, v in data.items() if k in names})

    def write(self, out_dir: str | Path) -> Path:
        path = Path(out_dir) / META_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        tmp.replace(path)
        return path


def read_export_meta(export_dir: str | Path, check_files: bool = True) -> ExportMeta:
    """The :class:`ExportMeta` of an export folder, with a clear error if it is not a complete one."""
    export_dir = Path(export_dir)
    path = export_dir / META_FILE
    if not path.exists():
        raise ExportFormatError(f"{export_dir} is not an ONNX export folder (missing {META_FILE}); "
                                "run `sail export` first")
    try:
        data = json.loads(path.read_text())
    except ValueError as err:
        raise ExportFormatError(f"{path} is not valid JSON ({err}); run `sail export` again") from None
    meta = ExportMeta.from_dict(data, where=str(path))
    if check_files:
        missing = [n for n in meta.files if not (export_dir / n).exists()]
        if missing:
            raise ExportFormatError(f"{export_dir} is an incomplete ONNX export (missing {', '.join(missing)}); "
                                    "run `sail export` again")
    return meta

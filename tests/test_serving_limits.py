"""serve.limits: validated at config load, written into config.pbtxt, and enforced by the in-process OnnxEmbedder
(the same code Triton runs) before anything is decoded. The same requests through a real tritonserver are in the
bad-input corpus (tests/badinput/serving/)."""

from __future__ import annotations

import io
import time
import tracemalloc

import numpy as np
import pytest

from exports import cached_export
from sail_core.config import ConfigError, ServeConfig, load_config
from sail_core.config.schema import ServeLimits
from sail_core.preprocess import samples
from sail_core.preprocess.audio import AudioTooLong, read_wav
from sail_core.preprocess.image import ImageTooLarge, load_image
from serving.backend.embedder import Limits, OnnxEmbedder
from serving.repository import read_config, write_configs
from tests.badinput.serving import png_bomb, png_declared, silent_wav

PNG = samples.image_bytes(401, (96, 64), "PNG")
WAV = samples.wav_bytes(402, seconds=2.0, rate=16000)


@pytest.fixture(scope="module")
def export_dir():
    return cached_export(1)[0]


@pytest.fixture(scope="module")
def embedder(export_dir):
    """Small limits, so that every case stays small and fast."""
    return OnnxEmbedder(export_dir, limits=Limits(max_text_chars=50, max_image_bytes=200_000, max_image_pixels=10_000,
                                                  max_audio_seconds=2.5, max_frames=4, max_rows=3))


@pytest.fixture(scope="module")
def default_embedder(export_dir):
    return OnnxEmbedder(export_dir)


def _refused(embedder, match: str, **rows) -> str:
    with pytest.raises(ValueError, match=match) as info:
        embedder.decode(**rows)
    message = str(info.value)
    assert "params.yaml" in message  # says where to raise it
    return message


# --- configuration ------------------------------------------------------------------------
def test_the_defaults_agree_everywhere():
    """params.yaml, the pydantic model and the backend's own copy (Triton cannot import pydantic) hold one set."""
    limits = load_config(profile="demo").serve.limits
    assert limits == ServeLimits()
    assert {**limits.model_dump(), "max_rows": None} == Limits().__dict__
    serve = ServeConfig(max_batch_size=16)
    assert serve.limit_values()["max_rows"] == 16  # null = serve.max_batch_size
    assert ServeConfig(limits=ServeLimits(max_rows=4)).limit_values()["max_rows"] == 4


@pytest.mark.parametrize("key", ["max_text_chars", "max_image_bytes", "max_image_pixels", "max_audio_seconds",
                                 "max_frames", "max_rows"])
@pytest.mark.parametrize("value", [0, -5])
def test_a_non_positive_limit_fails_at_load(key, value):
    with pytest.raises(ConfigError, match=rf"serve\.limits\.{key}'?: Input should be greater than 0; got {value}"):
        load_config(profile="demo", overrides={f"serve.limits.{key}": value})


def test_rows_above_the_batch_size_fail_at_load():
    with pytest.raises(ConfigError, match=r"serve\.limits\.max_rows = 65 is above serve\.max_batch_size = 64.*raise "
                                          r"serve\.max_batch_size"):
        load_config(profile="demo", overrides={"serve.limits.max_rows": 65})
    with pytest.raises(ConfigError, match=r"serve\.limits\.max_fames.*max_frames"):
        load_config(profile="demo", overrides={"serve.limits.max_fames": 3})


def test_the_limits_reach_config_pbtxt_and_back(tmp_path):
    serve = ServeConfig(max_batch_size=48, limits=ServeLimits(max_text_chars=999, max_audio_seconds=7.5, max_rows=40))
    params = {k: v.string_value for k, v in read_config(write_configs(tmp_path, serve, [1])).parameters.items()}
    assert Limits.from_mapping(params) == Limits(max_text_chars=999, max_audio_seconds=7.5, max_rows=40)
    gpu = read_config(tmp_path / serve.triton_model / "config.gpu.pbtxt.example")
    assert gpu.parameters["max_rows"].string_value == "40"
    plain = read_config(write_configs(tmp_path / "plain", ServeConfig(max_batch_size=48), [1]))
    assert plain.parameters["max_rows"].string_value == "48"  # null resolves to max_batch_size
    with pytest.raises(ValueError, match=r"serve\.limits\.max_frames = '0' must be positive"):
        Limits.from_mapping({"max_frames": "0"})
    with pytest.raises(ValueError, match=r"serve\.limits\.max_rows = 'lots' is not a number"):
        Limits.from_mapping({"max_rows": "lots"})


# --- each limit on the embedder -------------------------------------------------------------
def test_text_length(embedder):
    assert embedder.decode(texts=["x" * 50])[0].text == "x" * 50  # at the limit: served
    message = _refused(embedder, r"TEXT\[1\] has 51 characters, above the limit serve\.limits\.max_text_chars = 50; "
                                 r"shorten it", texts=["fine", "x" * 51])
    assert "raise serve.limits.max_text_chars" in message


def test_image_bytes_before_decoding(embedder, monkeypatch):
    big = PNG + b"\x00" * (200_001 - len(PNG))
    monkeypatch.setattr("serving.backend.embedder.load_image", lambda *a, **k: pytest.fail("decoded"))
    _refused(embedder, r"IMAGE\[0\] is 200,001 bytes, above the limit serve\.limits\.max_image_bytes = 200,000",
             images=[big])
    _refused(embedder, r"FRAMES\[0\]\[2\] is 200,001 bytes, above the limit serve\.limits\.max_image_bytes",
             frames=[[PNG, b"", big]])


def test_image_pixels(embedder):
    assert embedder.decode(images=[samples.image_bytes(1, (100, 100), "PNG")])[0].cover.shape == (3, 224, 224)
    _refused(embedder, r"IMAGE\[1\] declares 101 x 100 = 10,100 pixels, above the limit "
                       r"serve\.limits\.max_image_pixels = 10,000; resize it", texts=["a", "b"],
             images=[None, samples.image_bytes(1, (101, 100), "JPEG")])


def _huge_jpeg() -> bytes:
    """A small JPEG whose SOF0 header is edited to declare 20,000 x 20,000 pixels."""
    data = bytearray(samples.image_bytes(3, (32, 24), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (20_000).to_bytes(2, "big") * 2  # height, width
    return bytes(data)


@pytest.mark.parametrize("kind", ["png", "jpeg", "bomb"])
def test_a_huge_declared_image_is_refused_without_decoding(default_embedder, monkeypatch, kind):
    """20,000 x 20,000 (PNG, JPEG) and a 10,000 x 10,000 PNG bomb under the default limit (40 megapixels):
    refused from the header, before PIL's own bomb check (which refuses above ~179 MP without naming the size,
    and only warns at 100 MP) and before any pixel is allocated."""
    from PIL import ImageFile

    data = {"png": lambda: png_declared(20_000, 20_000), "jpeg": _huge_jpeg, "bomb": lambda: png_bomb(10_000, 10_000)}
    data = data[kind]()
    assert len(data) < 200_000
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("pixel data was decoded"))
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ValueError) as info:
            default_embedder.decode(images=[data])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    side = 10_000 if kind == "bomb" else 20_000
    assert f"IMAGE[0] declares {side} x {side} = {side * side:,} pixels, above the limit " \
           "serve.limits.max_image_pixels = 40,000,000" in str(info.value)
    assert time.perf_counter() - started < 2.0
    assert peak < 5_000_000, f"{peak:,} bytes were allocated to refuse it"


def test_load_image_refuses_by_header_and_keeps_pils_guard():
    with pytest.raises(ImageTooLarge, match="declares 20000 x 20000 = 400,000,000 pixels"):
        load_image(png_declared(20_000, 20_000), 224, max_pixels=40_000_000)
    with pytest.raises(ValueError, match="decompression bomb"):  # without a limit: PIL's own check still holds
        load_image(png_declared(20_000, 20_000), 224)
    assert load_image(io.BytesIO(PNG).getvalue(), 32, max_pixels=96 * 64).shape == (3, 32, 32)


def test_audio_seconds_from_the_header(embedder, monkeypatch):
    assert embedder.decode(audios=[WAV])[0].audio.shape == (96,)  # 2 s under a 2.5 s limit
    message = _refused(embedder, r"AUDIO\[0\] lasts 3\.0 s \(48,000 frames at 16000 Hz\), above the limit "
                                 r"serve\.limits\.max_audio_seconds = 2\.5; cut the clip", audios=[silent_wav(3.0)])
    assert "raise serve.limits.max_audio_seconds" in message
    # a header declaring 10 minutes over 44 bytes of data: refused before reading samples
    header_only = bytearray(silent_wav(0.0))
    header_only[40:44] = (600 * 16000 * 2).to_bytes(4, "little")
    monkeypatch.setattr("wave.Wave_read.readframes", lambda *a: pytest.fail("samples were read"))
    with pytest.raises(AudioTooLong, match="9,600,000 frames at 16000 Hz = 600.0 s, above the limit of 120 s"):
        read_wav(bytes(header_only), max_seconds=120)


def test_ten_minutes_of_audio_under_the_default_limit(default_embedder):
    with pytest.raises(ValueError, match=r"AUDIO\[0\] lasts 600\.0 s .*serve\.limits\.max_audio_seconds = 120"):
        default_embedder.decode(audios=[silent_wav(600)])


def test_a_wav_with_no_samples(embedder):
    with pytest.raises(ValueError, match=r"AUDIO\[0\]: the WAV holds no samples \(0 frames\); send a clip"):
        embedder.decode(texts=["hello"], audios=[silent_wav(0)])


def test_frames_subsampled_up_to_the_limit_refused_above(embedder, monkeypatch):
    frames = [samples.image_bytes(10 + j, (40, 30), "JPEG") for j in range(5)]
    row = embedder.decode(frames=[frames[:4]])[0]
    assert row.frames.shape == (embedder.keyframes, 3, 224, 224)  # 4 at the limit: subsampled to the model's 2
    monkeypatch.setattr("serving.backend.embedder.load_image", lambda *a, **k: pytest.fail("decoded"))
    message = _refused(embedder, r"FRAMES\[1\] has 5 keyframes, above the limit serve\.limits\.max_frames = 4; "
                                 r"send at most 4 per row \(the model samples 2", frames=[frames[:1], frames])
    assert "raise serve.limits.max_frames" in message


def test_rows_per_request(embedder):
    assert len(embedder.decode(texts=["a", "b", "c"])) == 3
    _refused(embedder, r"the request has 4 rows, above the limit serve\.limits\.max_rows = 3; split it",
             texts=["a", "b", "c", "d"])


def test_a_good_request_after_refusals_embeds_as_before(embedder, default_embedder):
    rows = dict(texts=["Toy Story (1995)"], images=[samples.image_bytes(5, (64, 64), "PNG")], audios=[WAV])
    for bad in (dict(texts=["x" * 51]), dict(audios=[silent_wav(3.0)]), dict(texts=list("abcd"))):
        with pytest.raises(ValueError):
            embedder.embed(**bad)
    np.testing.assert_allclose(embedder.embed(**rows), default_embedder.embed(**rows), atol=1e-6)

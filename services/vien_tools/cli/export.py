"""`vien export-onnx`: export a Qwen3-Embedding model to ONNX for the query side (needs the `export` extra).

Wired into `vien` by ``add_parser(subparsers)`` from vien_tools.cli.main.
"""

from __future__ import annotations

import argparse
import json
import logging


def _dtypes(raw: list[str] | None) -> list[str]:
    out: list[str] = []
    for item in raw or ["fp32"]:
        for d in item.split(","):
            d = d.strip()
            if d and d not in out:
                out.append(d)
    return out


def _cmd_export_onnx(ns: argparse.Namespace) -> int:
    from vien_tools.build.export_qwen3 import ExportError, export, summary

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        report = export(ns.model, ns.out, dtypes=_dtypes(ns.dtype), dims=ns.dims, max_tokens=ns.max_tokens,
                        task=ns.task, min_cosine=ns.min_cosine, model_id=ns.model_id, revision=ns.revision)
    except ExportError as exc:
        from vien_tools.cli.errors import CliError

        raise CliError(str(exc)) from None
    print(json.dumps({"out": str(ns.out), **summary(report)}, ensure_ascii=False))
    requested = set(_dtypes(ns.dtype))
    return 0 if requested <= set(report["kept"]) or not ns.require_all else 1


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from vien_tools.build.export_qwen3 import DEFAULT_TASK, DTYPES, MIN_COSINE

    x = subparsers.add_parser(
        "export-onnx",
        help="export a Qwen3-Embedding model to ONNX (last-token pooling, L2 norm) with a fidelity report",
        description="Export Qwen3-Embedding (any size) to an ONNX model directory that the query-embedder "
                    "loads. fp32 is always written; fp16/int8 are kept only when their minimum cosine to the "
                    "torch model on the vi/en probe set is at least --min-cosine. Needs torch and "
                    "transformers: pip install 'vien[export]'.")
    x.add_argument("model", help="local model directory (config.json, safetensors, tokenizer.json) or a "
                                 "Hugging Face id (needs huggingface_hub and network access)")
    x.add_argument("--out", required=True, help="output directory (vien_model.json, model*.onnx, tokenizer.json, "
                                                "fidelity.json)")
    x.add_argument("--dtype", action="append", metavar="{" + ",".join(DTYPES) + "}",
                   help="variant(s) to produce, repeatable or comma-separated (default fp32; fp32 is always kept)")
    x.add_argument("--dims", type=int, default=None,
                   help="MRL: slice the embedding to N dimensions in the graph (default: the model's full size)")
    x.add_argument("--max-tokens", type=int, default=None, help="token limit recorded for the model "
                                                                "(default max_position_embeddings)")
    x.add_argument("--task", default=DEFAULT_TASK, help="task description of the probe queries' instruction")
    x.add_argument("--min-cosine", type=float, default=MIN_COSINE,
                   help="keep a lower-precision variant only when its minimum cosine to torch reaches this")
    x.add_argument("--model-id", default=None, help="model id recorded in vien_model.json (cache keys)")
    x.add_argument("--revision", default=None, help="revision recorded in vien_model.json (default: the hub "
                                                    "commit, or a fingerprint of the local files)")
    x.add_argument("--require-all", action="store_true",
                   help="exit 1 when a requested variant was dropped for fidelity")
    x.set_defaults(fn=_cmd_export_onnx)
    return x

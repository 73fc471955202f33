"""Generate the Python protobuf/gRPC modules from proto/ (the single source of truth).

`python -m vien.protogen` rewrites services/vien/v1/*_pb2*.py; tests call `generate()` into a
temporary directory and compare, so a stale checked-in module fails the suite.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO / "proto"
SERVICES = REPO / "services"


def proto_files(root: Path = PROTO_ROOT) -> list[Path]:
    return sorted(root.glob("vien/v1/*.proto"))


def generate(out_dir: Path, root: Path = PROTO_ROOT) -> list[Path]:
    from grpc_tools import protoc  # dev dependency: generation is a build step, not a runtime one

    well_known = str(resources.files("grpc_tools") / "_proto")
    files = [str(p.relative_to(root)) for p in proto_files(root)]
    args = [
        "grpc_tools.protoc",
        f"-I{root}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed for {files}")
    return sorted((out_dir / "vien" / "v1").glob("*_pb2*.py*"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=SERVICES)
    ns = parser.parse_args(argv)
    written = generate(ns.out)
    print(f"generated {len(written)} files into {ns.out / 'vien' / 'v1'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

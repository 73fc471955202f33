"""`vien bench tracing` / `python bench/tracing_bench.py`: what tracing costs per record and per RPC.

Measures, in a fresh process for each setting (VIEN_TRACING is read once at setup), ingest's per-record
"process" span (started from a record's Kafka trace headers, two attributes, ended) and `annotate()` of
five attributes on the current span (what each servicer does per RPC), with tracing on (SDK provider, no
exporter: export happens off the request path in the batch processor's thread) and with VIEN_TRACING=0.
Best of 5 runs of 20,000 calls each. Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

_MEASURE = r"""
import json, timeit
from opentelemetry import trace
from vien.kafka.tracing import inject_headers
from vien.runtime.telemetry import annotate, setup_tracing
from vien_ingest.processor import IngestProcessor, Record

setup_tracing("bench")
with trace.get_tracer("bench").start_as_current_span("producer"):
    headers = inject_headers()
rec = Record("vien.documents", 0, 1, b"x", headers)
proc = IngestProcessor.__new__(IngestProcessor)  # only its span helper is used
from vien.runtime.telemetry import tracing_enabled
proc._tracing = tracing_enabled()

def record_span():
    span = proc._process_span(rec)
    if span.is_recording():
        span.set_attributes({"vien.tenant": "t", "vien.doc_id": "d"})
    span.end()

from opentelemetry import context
context.attach(trace.set_span_in_context(trace.get_tracer("bench").start_span("server")))
def rpc_annotate():  # the server span is current, as inside a servicer
    annotate({"vien.profile": "e5-small", "vien.lang": "vi", "vien.batch_size": 1, "vien.tokens": 12,
              "vien.cache_hit": False})

n = 20000
print(json.dumps({f.__name__: round(min(timeit.repeat(f, number=n, repeat=5)) / n * 1e6, 3)
                  for f in (record_span, rpc_annotate)}))
"""


def _measure(tracing: str) -> dict[str, float]:
    env = {**os.environ, "VIEN_TRACING": tracing, "PYTHONPATH": str(REPO / "services")}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    out = subprocess.run([sys.executable, "-c", _MEASURE], capture_output=True, text=True, env=env, check=True)
    result: dict[str, float] = json.loads(out.stdout)
    return result


def run(ns: Any = None) -> dict[str, Any]:
    on, off = _measure("1"), _measure("0")
    return {"us_per_call": {"tracing_on": on, "tracing_off": off}, "calls": 20000, "best_of": 5,
            "load_average_1m": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}


if __name__ == "__main__":
    print(json.dumps(run()))

"""The three views of the profiles config an evaluation run needs, derived from the services' own config.

- `docs`: what the doc-embedder runs with (the document side, unchanged);
- `queries`: what the router and the query-embedder run with: the profile's query encoder replaced by
  `--query-encoder` (to compare e.g. int8 queries against the same fp32 corpus);
- `--doc-prompt T` / `--query-prompt T` replace every profile's document / query prompt in all three views
  (e.g. `--doc-prompt "query: {text}"`: what a client that cannot tell documents from queries gets when it
  embeds documents as queries);
- `index`: what ingest and search run with. With `--dims N` every evaluated profile gets `dims: N` and a
  collection of its own (`<collection>_d<N>`). The services serve truncated dims per request only
  (search requires the collection's dims), so an MRL measurement indexes the documents at N dims: the
  doc-embedder's full vector cut to N and re-normalised (`vectors.truncate`, as the embedders do), and
  queries are asked of the router at N dims, which truncates the same way.

`--profile P` restricts the config to P and routes every language to it (one space for the whole run).
"""

from __future__ import annotations

from dataclasses import dataclass

from vien.runtime.config import RoutingConfig, VienConfig


class EvalConfigError(ValueError):
    """An option does not fit the profiles config; the message names the option."""


@dataclass(frozen=True)
class EvalConfigs:
    docs: VienConfig
    queries: VienConfig
    index: VienConfig
    profiles: list[str]          # the profiles the run can route to
    dims: dict[str, int]         # profile -> dims the corpus is indexed and queried at
    query_encoders: dict[str, str]


def derive_configs(base: VienConfig, profile: str = "", query_encoder: str = "", dims: int = 0,
                   doc_prompt: str = "", query_prompt: str = "") -> EvalConfigs:
    for option, field, template in (("--doc-prompt", "document_prompt", doc_prompt),
                                    ("--query-prompt", "query_prompt", query_prompt)):
        if not template:
            continue
        if "{text}" not in template:
            raise EvalConfigError(f"{option}: {template!r} has no {{text}} placeholder")
        base = base.model_copy(update={"profiles": {
            n: p.model_copy(update={field: template}) for n, p in base.profiles.items()}})
    if profile:
        if profile not in base.profiles:
            raise EvalConfigError(f"--profile: unknown profile {profile!r} (known: {', '.join(sorted(base.profiles))})")
        base = base.model_copy(update={"profiles": {profile: base.profiles[profile]},
                                       "routing": RoutingConfig(default=profile), "openai": type(base.openai)()})
    names = sorted(base.profiles)
    queries = base
    if query_encoder:
        enc = base.encoders.get(query_encoder)
        if enc is None:
            raise EvalConfigError(f"--query-encoder: unknown encoder {query_encoder!r} "
                                  f"(known: {', '.join(sorted(base.encoders))})")
        if enc.backend != "onnx":
            raise EvalConfigError(f"--query-encoder: {query_encoder!r} is a {enc.backend!r} encoder; the "
                                  "query-embedder runs local onnx encoders only")
        queries = base.model_copy(update={"profiles": {
            n: p.model_copy(update={"query_encoder": query_encoder}) for n, p in base.profiles.items()}})
    index = base
    out_dims = {n: p.dims for n, p in base.profiles.items()}
    if dims:
        for n, p in base.profiles.items():
            try:
                out_dims[n] = p.check_dims(dims)
            except ValueError as exc:
                raise EvalConfigError(f"--dims: profile {n!r}: {exc}") from None
        index = base.model_copy(update={"profiles": {
            n: p.model_copy(update={"dims": out_dims[n], "min_dims": min(p.min_dims, out_dims[n]),
                                    "collection": p.collection if out_dims[n] == p.dims
                                    else f"{p.collection}_d{out_dims[n]}"})
            for n, p in base.profiles.items()}})
    return EvalConfigs(docs=base, queries=queries, index=index, profiles=names, dims=out_dims,
                       query_encoders={n: p.query_encoder for n, p in queries.profiles.items()})

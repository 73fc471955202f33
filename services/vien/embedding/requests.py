"""Validation of embedding requests, shared by router and embedders.

Every failure is an InvalidArgument whose message names the field and the limit, e.g.
`texts[3]: 704 tokens exceeds the limit of 512 tokens of profile 'e5-small' (strict mode)`.
"""

from __future__ import annotations

from collections.abc import Sequence

from vien.runtime.config import DOCUMENT, QUERY, Kind, LimitsConfig, ProfileConfig, VienConfig
from vien.runtime.errors import InvalidArgument
from vien.v1 import common_pb2

KIND_TO_PB = {QUERY: common_pb2.EMBED_KIND_QUERY, DOCUMENT: common_pb2.EMBED_KIND_DOCUMENT}
#: EMBED_KIND_UNSPECIFIED means QUERY (the latency path), as the API documents
PB_TO_KIND: dict[int, Kind] = {common_pb2.EMBED_KIND_UNSPECIFIED: QUERY, common_pb2.EMBED_KIND_QUERY: QUERY,
                               common_pb2.EMBED_KIND_DOCUMENT: DOCUMENT}


def check_texts(texts: Sequence[str], limits: LimitsConfig, field: str = "texts") -> list[str]:
    if len(texts) == 0:
        raise InvalidArgument(field, "must contain at least one text")
    if len(texts) > limits.max_texts_per_request:
        raise InvalidArgument(
            field, f"{len(texts)} texts exceeds the limit of {limits.max_texts_per_request} per request"
        )
    out = []
    for i, t in enumerate(texts):
        if not t or not t.strip():
            raise InvalidArgument(f"{field}[{i}]", "must not be empty or whitespace only")
        if len(t) > limits.max_text_chars:
            raise InvalidArgument(
                f"{field}[{i}]", f"{len(t)} characters exceeds the limit of {limits.max_text_chars}"
            )
        if "\x00" in t:
            raise InvalidArgument(f"{field}[{i}]", "must not contain NUL characters")
        out.append(t)
    return out


def resolve_profile(config: VienConfig, name: str, field: str = "profile") -> tuple[str, ProfileConfig]:
    try:
        return name, config.profiles[name]
    except KeyError:
        known = ", ".join(sorted(config.profiles))
        raise InvalidArgument(field, f"unknown profile {name!r} (known: {known})") from None


def resolve_dims(profile_name: str, profile: ProfileConfig, requested: int, field: str = "dimensions") -> int:
    try:
        return profile.check_dims(requested)
    except ValueError as exc:
        raise InvalidArgument(field, f"{exc} (profile {profile_name!r})") from None

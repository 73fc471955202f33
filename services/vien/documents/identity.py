"""Which tenants and doc ids exist: one rule each, used by every entry point (``vien publish``, the ingest
worker, search, the store service, the API-key table).

Why these rules: point ids hash ``f"{tenant}/{doc_id}#{chunk}"``, so a tenant may not contain ``/``; a tenant
is also a key of metrics, logs and API-key tables, so it is a short token (letters, digits, ``_ . : @ -``, no
spaces), which is what search always enforced. A doc id is the producer's own identifier: any text up to
512 code points without control characters or surrounding whitespace.
"""

from __future__ import annotations

import re
import unicodedata

from vien.runtime.errors import InvalidArgument

TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$"
MAX_TENANT_CHARS = 128
MAX_DOC_ID_CHARS = 512
_TENANT_RE = re.compile(TENANT_PATTERN)


class IdentityError(InvalidArgument):
    """`field` breaks its rule: INVALID_ARGUMENT at a gRPC edge ("tenant: ..."), a poison event at ingest
    (reason "tenant ...", label `reason_code`, stable for the DLQ header and metrics)."""

    def __init__(self, field: str, problem: str, reason_code: str) -> None:
        super().__init__(field, problem)
        self.problem = problem
        self.reason_code = reason_code

    @property
    def reason(self) -> str:
        return f"{self.field} {self.problem}"


def _control_char(s: str) -> str | None:
    for c in s:
        if unicodedata.category(c) == "Cc" or c in "\u2028\u2029":
            return f"U+{ord(c):04X}"
    return None


def check_tenant(tenant: str, field: str = "tenant") -> str:
    if not tenant:
        raise IdentityError(field, "is missing (documents are always scoped to a tenant)", "missing_tenant")
    if len(tenant) > MAX_TENANT_CHARS:
        raise IdentityError(field, f"too long: {len(tenant)} characters > {MAX_TENANT_CHARS}", "tenant_too_long")
    if not _TENANT_RE.match(tenant):
        raise IdentityError(field, f"{tenant!r} must match {TENANT_PATTERN} (letters, digits, _ . : @ -; no "
                                   "spaces or '/')", "tenant_invalid")
    return tenant


def check_doc_id(doc_id: str, field: str = "doc_id") -> str:
    if not doc_id:
        raise IdentityError(field, "is missing", "missing_doc_id")
    if len(doc_id) > MAX_DOC_ID_CHARS:
        raise IdentityError(field, f"too long: {len(doc_id)} characters > {MAX_DOC_ID_CHARS}", "doc_id_too_long")
    bad = _control_char(doc_id)
    if bad:
        raise IdentityError(field, f"contains a control character ({bad})", "doc_id_control_char")
    if doc_id != doc_id.strip():
        raise IdentityError(field, "has leading or trailing whitespace", "doc_id_whitespace")
    return doc_id

"""W3C trace context (``traceparent``/``tracestate``, plus ``baggage``) in Kafka record headers.

Kafka headers are an ordered list of ``(str, bytes)`` pairs and may repeat a key; aiokafka hands them
to consumers as a tuple of tuples. Injection replaces any trace header already present (so a record
re-produced to the DLQ or a retry topic carries exactly one ``traceparent``); extraction reads the
last value of a key, case-insensitively, and ignores values that are not UTF-8.

The propagator is OpenTelemetry's global one (``OTEL_PROPAGATORS``, by default tracecontext+baggage).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter

Headers = list[tuple[str, bytes]]
HeadersIn = Sequence[tuple[str, bytes | None]] | Iterable[tuple[str, bytes | None]]


class _HeaderSetter(Setter[Headers]):
    def set(self, carrier: Headers, key: str, value: str) -> None:
        lk = key.lower()
        carrier[:] = [(k, v) for k, v in carrier if k.lower() != lk]
        carrier.append((key, value.encode("utf-8")))


class _HeaderGetter(Getter[Sequence[tuple[str, bytes | None]]]):
    def get(self, carrier: Sequence[tuple[str, bytes | None]], key: str) -> list[str] | None:
        lk = key.lower()
        found: list[str] = []
        for k, v in carrier:
            if k.lower() == lk and v is not None:
                try:
                    found.append(v.decode("utf-8"))
                except UnicodeDecodeError:
                    continue
        return found[-1:] or None  # the last one wins, like a later header overriding an earlier one

    def keys(self, carrier: Sequence[tuple[str, bytes | None]]) -> list[str]:
        return [k for k, _ in carrier]


_SETTER = _HeaderSetter()
_GETTER = _HeaderGetter()


def inject_headers(headers: HeadersIn | None = None, context: Context | None = None) -> Headers:
    """Return a new header list: `headers` plus the trace context of `context` (default: the current one).

    With no active (valid) span nothing is added, so the result equals the input list.
    """
    out: Headers = [(k, v) for k, v in (headers or ()) if v is not None]
    propagate.inject(out, context=context, setter=_SETTER)
    return out


def extract_context(headers: HeadersIn | None, context: Context | None = None) -> Context:
    """The context carried by a record's headers, to parent the consumer's span on.

    Malformed or absent trace headers give back `context` (default: an empty context), never an error.
    """
    return propagate.extract(list(headers or ()), context=context, getter=_GETTER)


def trace_headers(headers: HeadersIn | None) -> dict[str, str]:
    """Just the propagation headers of a record (decoded), for logs and DLQ inspection."""
    fields = {f.lower() for f in propagate.get_global_textmap().fields}
    out: dict[str, str] = {}
    for k, v in headers or ():
        if k.lower() in fields and v is not None:
            out[k.lower()] = v.decode("utf-8", "replace")
    return out

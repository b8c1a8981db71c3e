"""The ext_proc servicer fed arbitrary and bent message sequences: raw bytes through
``ParseFromString``, mutated encodings of real messages, random header sets, the body before the
headers, duplicates, phases we never enable, empty messages. It must always answer every message
that has a phase, with a valid response of that phase (or an immediate response), route only to
known regions, and never raise."""

from __future__ import annotations

from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from fuzzkit import (
    PHASES,
    RandomSource,
    ServicerHarness,
    budget,
    headers_message,
    phase_message,
    source_messages,
    tried,
    webhook_requests,
)
from hypothesis import given
from hypothesis import strategies as st

from sidecar import metrics
from sidecar.core import Request
from sidecar.core.providers import PROVIDERS

HARNESS = ServicerHarness()


@st.composite
def message_sequences(draw: st.DrawFn) -> list[ep.ProcessingRequest]:
    req: Request = draw(webhook_requests())
    body = req.body if req.body is not None else b""
    normal = [headers_message(req, end_of_stream=draw(st.booleans()) and not body, raw=draw(st.booleans()))]
    if body or draw(st.booleans()):
        normal.append(phase_message("request_body", body, end_of_stream=draw(st.booleans())))
    extra = draw(
        st.lists(
            st.one_of(
                st.builds(phase_message, st.sampled_from(PHASES), st.binary(max_size=40), st.booleans()),
                st.just(ep.ProcessingRequest()),
                st.binary(max_size=80).map(_parse_or_empty),
            ),
            max_size=3,
        )
    )
    order = draw(st.permutations(normal + extra)) if draw(st.integers(0, 3)) == 0 else normal + extra
    return list(order) * draw(st.integers(1, 2))


def _parse_or_empty(data: bytes) -> ep.ProcessingRequest:
    try:
        return ep.ProcessingRequest.FromString(data)
    except Exception:  # DecodeError: gRPC would never hand the servicer such a message
        return ep.ProcessingRequest()


@budget(3_000)
@given(message_sequences(), st.integers(0, 1))
def test_fuzz_servicer_with_structured_sequences(messages: list[ep.ProcessingRequest], context: int) -> None:
    tried("servicer/structured")
    HARNESS.check(messages, HARNESS.run(messages, context))


@budget(20_000)
@given(st.integers(0, 2**64))
def test_fuzz_servicer_with_seeded_sequences(seed: int) -> None:
    src = RandomSource(seed)
    messages = source_messages(src)
    tried("servicer/seeded")
    HARNESS.check(messages, HARNESS.run(messages, seed % 2))


def test_metric_labels_stay_bounded_after_fuzzing() -> None:
    """Whatever the fuzzers sent, the request metric's provider label took only known values."""
    for seed in range(200):
        messages = source_messages(RandomSource(seed))
        HARNESS.run(messages, seed % 2)
    allowed = set(PROVIDERS) | {"plugins", "unknown", "none"}
    providers = {
        sample.labels["provider"]
        for family in metrics.REQUESTS.collect()
        for sample in family.samples
        if "provider" in sample.labels
    }
    assert providers <= allowed, providers - allowed

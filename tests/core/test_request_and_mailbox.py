from __future__ import annotations

from sidecar.core import Mailbox, Organization, Request, Resolution
from sidecar.core.request import dig, id_text, parse_json


def test_from_target_splits_query_and_lowercases_headers() -> None:
    req = Request.from_target("post", "/a/b/?x=1&jwt=t", {"X-Foo": "bar"}, b"")
    assert (req.method, req.path, req.query, req.full_path) == ("POST", "/a/b/", "x=1&jwt=t", "/a/b/?x=1&jwt=t")
    assert req.header("x-foo") == "bar"
    assert req.query_param("jwt") == "t"


def test_json_and_form_never_raise() -> None:
    for body in (None, b"", b"{", b"\xff\xfe", b"[" * 100_000, b'{"a": 1}'):
        req = Request("POST", "/", "", {}, body)
        req.json()
        req.form()
    assert parse_json(b'{"a": {"b": 2}}') == {"a": {"b": 2}}
    assert Request("POST", "/", "", {}, b"a=1&b=%20").form() == {"a": "1", "b": " "}


def test_dig_and_id_text() -> None:
    assert dig({"a": {"b": 3}}, "a", "b") == 3
    assert dig({"a": [1]}, "a", "b") is None
    assert id_text(5) == "5"
    assert id_text(True) is None
    assert id_text("") is None
    assert id_text(1.5) is None


def test_regions_are_unique_and_sorted() -> None:
    orgs = (Organization(1, "a", "us"), Organization(2, "b", "de"), Organization(3, "c", "us"))
    assert Resolution(None, orgs).regions == ("de", "us")


def test_mailbox_names() -> None:
    assert Mailbox("gitlab", "42").name() == "gitlab:42"
    assert Mailbox("gitlab", "42", bucket_key=117).name() == "gitlab:42"
    assert Mailbox("gitlab", "42", bucket_key=117).name(over_volume=True) == "gitlab:42:17"
    assert Mailbox("github", "9", bucket_key=345, event_type="push", always_bucket=True).name() == "github:9:45:push"
    assert Mailbox("jira", "3", bucket_key=27, bucket_count=10).name(over_volume=True) == "jira:3:7"

"""Azure DevOps (reference §3.11), from the documented ``workitem.updated`` service hook event.

https://learn.microsoft.com/en-us/azure/devops/service-hooks/events#workitem.updated
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers_b import DE, NOW, US, any_body, any_resolution, decide, decide_any, found, json_request, run
from hypothesis import given

from sidecar.core import ByExternalId, Context, Control, Integration, Mailbox, NeedBody, Reply, Request, ShedRule, Store

COLLECTION = "c12d0eb8-e382-443b-9f9c-c52cba5014c2"
KEY = ByExternalId("vsts", COLLECTION)
INTEGRATION = Integration(50, "vsts", COLLECTION)
DIRECTORY = {KEY: found(INTEGRATION, US, DE)}
PATH = "/extensions/vsts/issue-updated/"


def work_item_updated(collection: Any = COLLECTION, work_item_id: Any = 5) -> dict[str, Any]:
    return {
        "subscriptionId": "00000000-0000-0000-0000-000000000000",
        "notificationId": 5,
        "id": "27646e0e-b520-4d2b-9411-bba7524947cd",
        "eventType": "workitem.updated",
        "publisherId": "tfs",
        "resource": {
            "id": 2,
            "workItemId": work_item_id,
            "rev": 2,
            "fields": {"System.State": {"oldValue": "New", "newValue": "Approved"}},
            "url": "http://fabrikam-fiber-inc.visualstudio.com/DefaultCollection/_apis/wit/workItems/5/updates/2",
        },
        "resourceVersion": "1.0",
        "resourceContainers": {
            "collection": {"id": collection},
            "account": {"id": "f844ec47-a9db-4511-8281-8b63f4eaf94e"},
            "project": {"id": "be9b3917-87e6-42a4-a549-2bc06a7a878f"},
        },
        "createdDate": "2016-09-19T13:03:28.834Z",
    }


def hook(payload: Any = None) -> Request:
    headers = {"Authorization": "Basic c2VudHJ5OnNoYXJlZC1zZWNyZXQ="}
    body = work_item_updated() if payload is None else payload
    return json_request("POST", PATH, body, headers, "application/json; charset=utf-8")


def test_a_work_item_update_is_stored_per_region_in_a_ten_bucket_mailbox() -> None:
    result = run(hook(), Context(now=NOW), DIRECTORY)
    assert result.header_phase == NeedBody()
    assert result.lookups == [(KEY,)]
    mailbox = Mailbox("vsts", "50", bucket_key=5, bucket_count=10)
    assert result.decision == Store("vsts", ("de", "us"), mailbox, 50, "stored")
    assert (mailbox.name(), mailbox.name(over_volume=True)) == ("vsts:50", "vsts:50:5")


@pytest.mark.parametrize("work_item_id", [None, "5", True, 5.0])
def test_only_an_integer_work_item_id_is_a_bucket_key(work_item_id: Any) -> None:
    decision = decide(hook(work_item_updated(work_item_id=work_item_id)), None, DIRECTORY)
    assert isinstance(decision, Store)
    assert decision.mailbox.bucket_key is None


def test_a_numeric_collection_id_is_looked_up_as_text() -> None:
    result = run(hook(work_item_updated(collection=1234)), Context(now=NOW), {})
    assert result.lookups == [(ByExternalId("vsts", "1234"),)]


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        [1, 2],
        {"eventType": "workitem.updated"},
        work_item_updated(collection=None),
        work_item_updated(collection=""),
        work_item_updated(collection={"id": "x"}),
        work_item_updated(collection=False),
    ],
)
def test_a_body_without_a_collection_id_is_400_without_lookup(payload: Any) -> None:
    result = run(hook(payload), Context(now=NOW), DIRECTORY)
    assert (result.decision, result.lookups) == (Reply(400, "unknown_integration"), [])


def test_unknown_integration_and_no_active_organization_are_400() -> None:
    assert decide(hook(), None, {}) == Reply(400, "unknown_integration")
    assert decide(hook(), None, {KEY: found(INTEGRATION)}) == Reply(400, "no_active_organization")


def test_an_organization_in_an_unconfigured_region_is_a_500() -> None:
    assert decide(hook(), Context(now=NOW, regions=frozenset({"de"})), DIRECTORY) == Reply(500, "unknown_region")


def test_shed_vsts_is_429() -> None:
    shed = Context(now=NOW, shed=(ShedRule("vsts"),))
    assert decide(hook(), shed, DIRECTORY) == Reply(429, "shed", headers=(("retry-after", "60"),))


@pytest.mark.parametrize("path", ["search/acme/50/", "configure/"])
def test_every_other_view_goes_to_control(path: str) -> None:
    assert decide(Request.from_target("GET", f"/extensions/vsts/{path}")) == Control("control_only_view")


def test_an_unknown_view_is_404() -> None:
    assert decide(Request.from_target("POST", "/extensions/vsts/work-item/")) == Reply(404, "no_such_view")


@given(body=any_body(work_item_updated()), resolution=any_resolution())
def test_never_raises(body: bytes, resolution: Any) -> None:
    decide_any(Request("POST", PATH, "", {"content-type": "application/json"}, body), Context(now=NOW), resolution)

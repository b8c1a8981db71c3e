"""The generated admin modules: present, current with the .proto, and buildable from every package
source (the wheel, the sdist, the image's build context)."""

from __future__ import annotations

import re
from pathlib import Path

from sidecar.protos.silo_router.admin.v1 import admin_pb2

ROOT = Path(__file__).parents[1]
PROTO = ROOT / "protos/silo_router/admin/v1/admin.proto"


def test_the_generated_module_matches_the_proto() -> None:
    # A proto edited without reinstalling (make does it: the venv stamp depends on the protos) fails here.
    text = PROTO.read_text()
    service = admin_pb2.DESCRIPTOR.services_by_name["Admin"]
    assert service.full_name == "silo_router.admin.v1.Admin"
    assert {method.name for method in service.methods} == set(re.findall(r"^\s*rpc (\w+)\(", text, re.MULTILINE))
    messages = set(re.findall(r"^message (\w+)", text, re.MULTILINE))
    assert messages == set(admin_pb2.DESCRIPTOR.message_types_by_name)
    for name in messages:
        fields = re.search(rf"^message {name} \{{(.*?)^\}}", text, re.MULTILINE | re.DOTALL)
        assert fields is not None
        declared = set(re.findall(r"^\s*(?:optional |repeated )?[\w.<>, ]+ (\w+) = \d+;", fields[1], re.MULTILINE))
        assert declared == set(admin_pb2.DESCRIPTOR.message_types_by_name[name].fields_by_name), name


def test_every_package_source_carries_the_protos_and_the_build_hook() -> None:
    manifest = (ROOT / "MANIFEST.in").read_text().splitlines()
    assert "recursive-include protos *.proto" in manifest
    assert "prune sidecar/protos" in manifest  # generated per build, never shipped as source
    image_context = (ROOT / "deploy/Dockerfile.dockerignore").read_text().split()
    assert {"!setup.py", "!protos", "sidecar/protos"} <= set(image_context)
    assert "sidecar/protos/" in (ROOT / ".gitignore").read_text().splitlines()

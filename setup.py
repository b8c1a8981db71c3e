"""Build hook: compile ``protos/**/*.proto`` into ``sidecar/protos/`` (generated, never committed).

Everything else about the package lives in pyproject.toml; this file only adds a ``build_py`` that
runs ``grpc_tools.protoc`` with the mypy-protobuf plugins (both are [build-system] requirements):

* a wheel (``pip wheel .``, ``python -m build``): the modules are written into the build directory;
* an editable install (``pip install -e .``, what the Makefile does): setuptools serves the package
  from the source tree, so the modules are written there, into the git-ignored ``sidecar/protos/``.

The protos are compiled under the virtual path ``sidecar/protos/``, so the generated modules import
each other as ``sidecar.protos.…`` while the services keep their own proto packages
(``silo_router.admin.v1.Admin``).
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PROTOS = ROOT / "protos"
GENERATED = "sidecar/protos"
"""Where the modules go, relative to the package root (a build directory or the source tree)."""
PLUGINS = {"mypy": "main", "mypy_grpc": "grpc"}
"""protoc plugin name → entry point in ``mypy_protobuf.main``: typed ``.pyi`` stubs for both modules."""


def compile_protos(out_root: Path) -> list[Path]:
    """Generate the modules of every proto under ``protos/`` below ``out_root``; the files written."""
    sources = sorted(PROTOS.rglob("*.proto"))
    if not sources:
        return []
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError:
        raise SystemExit("building silo-router needs grpcio-tools (pyproject.toml [build-system] requires)") from None
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    # The folder is the build's alone: start empty, so a removed proto leaves no stale module behind.
    shutil.rmtree(out_root / GENERATED, ignore_errors=True)
    (out_root / GENERATED).mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"--proto_path={GENERATED}={PROTOS}",
            f"--proto_path={well_known}",
            f"--python_out={out_root}",
            f"--grpc_python_out={out_root}",
        ]
        for name, entry in PLUGINS.items():
            args += [f"--plugin=protoc-gen-{name}={_plugin(Path(tmp), entry)}", f"--{name}_out={out_root}"]
        if protoc.main([*args, *(str(source) for source in sources)]) != 0:
            raise SystemExit(f"protoc failed on {', '.join(str(s.relative_to(ROOT)) for s in sources)}")
    _add_init_files(out_root)
    return sorted(path for path in (out_root / GENERATED).rglob("*") if path.is_file())


def _plugin(folder: Path, entry: str) -> Path:
    """An executable that runs a mypy-protobuf entry point with this interpreter. protoc runs plugins
    as programs, and the console scripts pip installed may not be on PATH (build isolation)."""
    script = folder / f"protoc-gen-{entry}"
    script.write_text(f"#!{sys.executable}\nfrom mypy_protobuf.main import {entry}\n{entry}()\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def _add_init_files(out_root: Path) -> None:
    """Regular packages down to every generated module: plain imports and mypy find them alike."""
    for folder in {path.parent for path in (out_root / GENERATED).rglob("*_pb2.py")}:
        while folder != out_root / "sidecar":
            (folder / "__init__.py").touch()
            folder = folder.parent


class BuildPyWithProtos(build_py):
    """``build_py`` plus the generated modules (``editable_mode``: in the source tree, see above)."""

    def run(self) -> None:
        super().run()
        out_root = ROOT if self.editable_mode else Path(self.build_lib)
        self._generated = compile_protos(out_root)
        if self.editable_mode:
            print(f"generated {len(self._generated)} files under {GENERATED}/", file=sys.stderr)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs: list[str] = super().get_outputs(include_bytecode)
        if self.editable_mode:
            return outputs  # in the source tree: nothing for the editable wheel to carry
        return outputs + [os.fspath(path) for path in getattr(self, "_generated", [])]


setup(cmdclass={"build_py": BuildPyWithProtos})

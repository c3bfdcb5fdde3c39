"""Type stubs of the real TensorRT 11.4 Python API, for type-checking the TensorRT backend without TensorRT.

TensorRT's libraries cannot be installed on CPU-only machines (CI, the dev box), but the PyPI bindings
wheel ``tensorrt-cu13-bindings`` is real: its compiled module ``tensorrt_bindings/tensorrt.so`` carries
the whole Python API and needs only nine C entry points of ``libnvinfer`` / ``libnvinfer_plugin`` /
``libnvonnxparser`` to load. This script

1. installs the pinned bindings wheel and ``pybind11-stubgen`` into ``.state/tensorrt-stubs/site``;
2. compiles three throw-away shared libraries (gcc) that define those nine names and return null / 0;
3. imports ``tensorrt_bindings`` against them (**introspection only**: any call into the library
   returns nothing useful — this checks names and signatures, never behaviour) and runs
   ``pybind11-stubgen`` to write ``.pyi`` stubs;
4. adds a ``tensorrt`` stub package re-exporting them (users import the API as ``tensorrt``).

``make typecheck`` then runs mypy on ``enginekit/runtime_tensorrt.py`` and ``tasks/tensorrt_build.py``
with ``MYPYPATH=.state/tensorrt-stubs/stubs``. Idempotent: a finished stub tree is reused.

    python -m infra.tensorrt_stubs [--out .state/tensorrt-stubs]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

BINDINGS = "tensorrt-cu13-bindings==11.4.0.106"
STUBGEN = "pybind11-stubgen==2.5.5"
SYMBOLS = {
    "libnvinfer.so.11": [
        "createInferBuilder_INTERNAL",
        "createInferRefitter_INTERNAL",
        "createInferRuntime_INTERNAL",
        "getBuilderPluginRegistry",
        "getPluginRegistry",
    ],
    "libnvinfer_plugin.so.11": ["initLibNvInferPlugins"],
    "libnvonnxparser.so.11": [
        "createNvOnnxParser_INTERNAL",
        "createNvOnnxParserRefitter_INTERNAL",
        "getNvOnnxParserVersion",
    ],
}
DONE = "stubs/tensorrt/__init__.pyi"


def _run(command: list[str], **kwargs) -> None:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise SystemExit(f"error: {' '.join(command[:4])} ... failed ({result.returncode}):\n{result.stderr[-2000:]}")


def build(out: Path) -> Path:
    if (out / DONE).is_file():
        return out / "stubs"
    if shutil.which("gcc") is None:
        raise SystemExit("error: gcc is needed to build the placeholder TensorRT libraries (apt install gcc)")
    site, libs, stubs = out / "site", out / "libs", out / "stubs.partial"
    for path in (site, libs, stubs):
        shutil.rmtree(path, ignore_errors=True)
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), BINDINGS, STUBGEN])
    libs.mkdir(parents=True)
    for library, names in SYMBOLS.items():
        source = libs / f"{library}.c"
        source.write_text("".join(f"void *{name}(void) {{ return 0; }}\n" for name in names))
        _run(["gcc", "-shared", "-fPIC", "-o", str(libs / library), str(source)])
    environment = {
        **os.environ,
        "LD_LIBRARY_PATH": f"{libs}:{os.environ.get('LD_LIBRARY_PATH', '')}",
        "PYTHONPATH": str(site),
    }
    _run(
        [sys.executable, "-m", "pybind11_stubgen", "tensorrt_bindings", "-o", str(stubs), "--ignore-all-errors"],
        env=environment,
    )
    _repair_signatures(stubs)
    package = stubs / "tensorrt"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.pyi").write_text(
        "# Users import TensorRT as `tensorrt`; its API is the bindings module's.\n"
        "from tensorrt_bindings.tensorrt import *\n"
        "from tensorrt_bindings import __version__ as __version__\n"
    )
    final = out / "stubs"
    shutil.rmtree(final, ignore_errors=True)
    stubs.rename(final)
    return final


def _repair_signatures(stubs: Path) -> None:
    """pybind11 lets through signatures that are not Python (a C++ parameter named ``in``, a parameter
    without default after defaulted ones): such a ``def`` keeps its name and return type and takes
    ``*args, **kwargs`` (its call sites are then checked less strictly, never rejected)."""
    signature = re.compile(r"^(\s*)def (\w+)\((.*)\)( -> .*)?:\s*$")
    for path in stubs.rglob("*.pyi"):
        lines = path.read_text().splitlines()
        changed = False
        for index, line in enumerate(lines):
            match = signature.match(line)
            if not match:
                continue
            try:
                compile(line.strip() + " ...", str(path), "exec")
            except SyntaxError:
                indent, name, _, returns = match.groups()
                first = "self, " if indent else ""
                lines[index] = f"{indent}def {name}({first}*args: typing.Any, **kwargs: typing.Any){returns or ''}:"
                changed = True
        if changed:
            path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(".state/tensorrt-stubs"))
    stubs = build(parser.parse_args(argv).out.resolve())
    print(stubs)
    return 0


if __name__ == "__main__":
    sys.exit(main())

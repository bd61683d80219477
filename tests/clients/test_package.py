"""apinalytics-client is a distribution of its own: its wheel builds from the repository
path, installs and imports without the service or any framework, and neither package
imports the other."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "python"


def imported_modules(package: Path) -> set[str]:
    """Top-level names of every absolute import in a source file, or a package's."""
    names = set()
    for path in [package] if package.is_file() else package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_neither_package_imports_the_other() -> None:
    client = imported_modules(CLIENT / "src" / "apinalytics_client")
    service = imported_modules(ROOT / "service" / "apinalytics")
    assert "apinalytics" not in client
    assert "apinalytics_client" not in service
    # The senders and the ASGI middleware need nothing beyond the standard library;
    # a framework is imported only by its own module (wsgi.py's Flask part: lazily).
    core = set()
    for name in ("__init__", "_core", "sender", "async_sender", "_middleware", "asgi"):
        core |= imported_modules(CLIENT / "src" / "apinalytics_client" / f"{name}.py")
    assert core <= set(sys.stdlib_module_names) | {"__future__"}, core


def test_the_wheel_builds_installs_and_imports_alone(tmp_path: Path) -> None:
    dist, site, source = tmp_path / "dist", tmp_path / "site", tmp_path / "source"
    # Built from a copy: setuptools leaves build/ and *.egg-info beside the sources.
    shutil.copytree(CLIENT, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(source),
            "-w",
            str(dist),
        ],
        check=True,
        cwd=tmp_path,
        capture_output=True,
    )
    [wheel] = dist.glob("apinalytics_client-0.1.0-py3-none-any.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"apinalytics_client/__init__.py", "apinalytics_client/py.typed"} <= names
    assert not [n for n in names if n.startswith(("apinalytics/", "tests/"))]
    metadata = zipfile.ZipFile(wheel).read("apinalytics_client-0.1.0.dist-info/METADATA").decode()
    assert "Requires-Dist: flask" in metadata.replace("Flask", "flask")
    assert not [
        line
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist") and "extra ==" not in line
    ]

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    # -I: isolated from this checkout, its venv's site-packages and the environment.
    script = (
        "import sys; sys.path[:0] = [sys.argv[1]]\n"
        "import apinalytics_client, apinalytics_client.asgi, apinalytics_client.wsgi\n"
        "s = apinalytics_client.Sender('app', 'key', 'http://127.0.0.1:9', flush_at_exit=False)\n"
        "assert s.record(method='GET', url='/', status_code=200, response_us=1)\n"
        "print(apinalytics_client.__file__)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('apinalytics', 'aiohttp', 'flask', 'django', 'starlette')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script, str(site)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    assert out[0].startswith(str(site))
    assert out[1] == "[]"


PYENV = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"


@pytest.mark.parametrize("minor", ["3.9", "3.10", "3.12", "3.13"])
def test_the_client_runs_on_every_python_it_claims(minor: str) -> None:
    """requires-python >= 3.9: the senders and middleware run there, not only on the
    service's 3.11 (interpreters as pyenv installs them on the project's machines)."""
    found = sorted(PYENV.glob(f"{minor}.*/bin/python"))
    if not found:
        pytest.skip(f"no Python {minor} under {PYENV} (pyenv install {minor})")
    out = subprocess.run(
        [str(found[-1]), "-s", str(Path(__file__).with_name("smoke_client.py"))],
        env={"PYTHONPATH": str(CLIENT / "src")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["/asgi?a=2", "/async", "/wsgi"]

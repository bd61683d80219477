"""The image starts as docker/Dockerfile says, run as its user would run it.

No Docker engine is needed: the test lays the image's files out the way its COPY lines
place them (the npm stage's product is the checkout's dashboard/, which `make setup`
installs with `npm ci` from the same lock), in a tree that is read-only except the
state directory, and runs the Dockerfile's CMD with the Dockerfile's ENV. Absolute
paths of the image (APINALYTICS_HOME, the user's home) are taken inside that tree;
the user's home does not exist and cannot be made, as in the image. Run as root, the
process loses every capability (setpriv), so file permissions bind it like the
image's unprivileged user. What the run adds to the image's ENV is only what
compose.yaml or `docker run` gives: the database URL, and a free port on 127.0.0.1
instead of 0.0.0.0:8080. No session secret is in the environment.

- started as ``docker run`` would (the image's ENV) or as compose.yaml does (with its
  environment, empty optional values included): /readyz answers 200, and the
  HEALTHCHECK's own command exits 0;
- /dashboard/ answers 200, and so does the uPlot file it loads (the npm stage's);
- the generated session secret is the one file written, in the state directory;
- SIGTERM stops it with exit status 0;
- the same start without a writable state directory fails (the test can fail).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import stat
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from apinalytics.localdb import free_port

from . import dockerfile
from . import test_compose as compose
from .dockerfile import ROOT, Stage

VENV_BIN = Path(sys.executable).parent
STAGES = dockerfile.stages()
FINAL = STAGES[-1]


@dataclass
class Image:
    """The image's filesystem, laid out under ``root``."""

    root: Path
    stage: Stage

    def path(self, image_path: str) -> Path:
        return self.root / image_path.lstrip("/")

    @property
    def workdir(self) -> Path:
        return self.path(self.stage.workdir)

    def env(self, database_url: str, port: int) -> dict[str, str]:
        image_env = {
            k: str(self.path(v)) if v.startswith("/") else v for k, v in self.stage.env.items()
        }
        return {
            # The python image's; the service's console script is the venv's here.
            "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": str(self.path(user_home(self.stage))),
            **image_env,
            # What `pip install -e .` in WORKDIR does: the package is the image's copy.
            "PYTHONPATH": str(self.workdir / "service"),
            "APINALYTICS_DATABASE_URL": database_url,
            "APINALYTICS_HOST": "127.0.0.1",
            "APINALYTICS_PORT": str(port),
        }


def user_home(stage: Stage) -> str:
    for run in stage.runs:
        m = re.search(r"useradd .*--home-dir (\S+)", run)
        if m:
            return m[1]
    raise AssertionError("the image's user is made by useradd --home-dir HOME")


def unprivileged(argv: list[str]) -> list[str]:
    """As root: the same command without capabilities (no override of permissions)."""
    if os.geteuid() != 0:
        return argv
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root, and setpriv (util-linux) is missing to drop root's powers")
    return [setpriv, "--bounding-set=-all", "--inh-caps=-all", "--", *argv]


def copy_into(image: Image, copy: dockerfile.Copy) -> None:
    dest = image.workdir / copy.dest
    ignore = shutil.ignore_patterns(*dockerfile.ignored_names())
    if copy.from_stage is not None:
        # The stage's product: its WORKDIR after `npm ci` and its COPY lines, which is
        # the checkout's directory of the same name after `make setup`.
        stage = next(s for s in STAGES if s.name == copy.from_stage)
        assert any("npm ci" in r for r in stage.runs), "the dashboard stage runs npm ci"
        assert copy.sources == [stage.workdir]
        produced = ROOT / Path(stage.workdir).name
        if not (produced / "node_modules").is_dir():
            pytest.fail(f"{produced}/node_modules is missing: run `make setup`")
        skip_all_but_modules = shutil.ignore_patterns(
            *(n for n in dockerfile.ignored_names() if n != "node_modules")
        )
        shutil.copytree(produced, dest, ignore=skip_all_but_modules, dirs_exist_ok=True)
        return
    for source in copy.sources:
        src = ROOT / source
        if src.is_dir():
            target = dest if len(copy.sources) == 1 else dest / src.name
            shutil.copytree(src, target, ignore=ignore, dirs_exist_ok=True)
        else:
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / src.name)


def read_only(top: Path) -> None:
    for path in [top, *top.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def writable_again(top: Path) -> None:
    for path in [top, *top.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


@pytest.fixture
def image() -> Iterator[Image]:
    # Not under pytest's tmp_path, whose parents only root may enter.
    root = Path(tempfile.mkdtemp(prefix="apinalytics-image-"))
    image = Image(root, FINAL)
    for copy in FINAL.copies:
        copy_into(image, copy)
    state = image.path(FINAL.env["APINALYTICS_HOME"])
    state.mkdir(parents=True)
    read_only(image.workdir)
    read_only(root)
    state.chmod(0o700)
    try:
        yield image
    finally:
        writable_again(root)
        shutil.rmtree(root)


async def start(image: Image, env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    argv = list(FINAL.cmd)
    exe = shutil.which(argv[0], path=env["PATH"])
    assert exe is not None, f"{argv[0]} is not on the image's PATH"
    with log.open("wb") as err:
        return await asyncio.create_subprocess_exec(
            *unprivileged([exe, *argv[1:]]),
            env=env,
            cwd=image.workdir,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=err,
            stderr=err,
        )


async def wait_ready(base: str, proc: asyncio.subprocess.Process, log: Path) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            if proc.returncode is not None:
                raise AssertionError(f"exited with {proc.returncode}:\n{log.read_text()}")
            try:
                async with http.get(f"{base}/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"/readyz never answered 200:\n{log.read_text()}")


def test_the_dockerfile_says_how_the_image_starts() -> None:
    """What the start test relies on is stated in the Dockerfile, not assumed."""
    assert [s.name for s in STAGES[:-1]] == ["dashboard"]
    assert FINAL.cmd[:2] == ["apinalytics", "serve"]
    assert FINAL.user is not None
    assert FINAL.user.split(":")[0] not in ("0", "root")
    assert FINAL.env["APINALYTICS_HOST"] == "0.0.0.0"
    assert FINAL.expose == [FINAL.env["APINALYTICS_PORT"]]
    assert FINAL.env["APINALYTICS_HOME"].startswith("/")
    assert "APINALYTICS_SESSION_SECRET" not in FINAL.env
    assert "readyz" in " ".join(FINAL.healthcheck)
    home = FINAL.env["APINALYTICS_HOME"]
    assert any(
        f"mkdir -p {home}" in r and f"chown apinalytics:apinalytics {home}" in r for r in FINAL.runs
    )


def compose_environment() -> dict[str, str]:
    """What compose.yaml adds for the service, .env.example's empty values included;
    its database URL is replaced by the test's."""
    env: dict[str, str] = compose.config()["services"]["apinalytics"]["environment"]
    return {k: v for k, v in env.items() if k != "APINALYTICS_DATABASE_URL"}


@pytest.mark.parametrize("started_by", ["docker run", "compose"])
async def test_the_image_start_command_serves_as_its_user(
    image: Image, database_url: str, started_by: str
) -> None:
    port = free_port()
    env = image.env(database_url, port)
    assert "APINALYTICS_SESSION_SECRET" not in env
    if started_by == "compose":
        env.update(compose_environment())
        assert env["APINALYTICS_SESSION_SECRET"] == ""
    log = image.root.parent / f"{image.root.name}.log"
    # The process imports the image's copy of the package, not the checkout's.
    where = await asyncio.create_subprocess_exec(
        *unprivileged(
            [str(VENV_BIN / "python"), "-c", "import apinalytics; print(apinalytics.__file__)"]
        ),
        env=env,
        cwd=image.workdir,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await where.communicate()
    assert Path(out.decode().strip()).is_relative_to(image.workdir), out

    proc = await start(image, env, log)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(base, proc, log)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/dashboard/") as resp:
                assert resp.status == 200
                page = await resp.text()
            chart = re.search(r'src="(node_modules/[^"]+)"', page)
            assert chart, "the dashboard loads uPlot from node_modules"
            async with http.get(f"{base}/dashboard/{chart[1]}") as resp:
                assert resp.status == 200
                assert len(await resp.read()) > 10_000
        check = await asyncio.create_subprocess_exec(
            *unprivileged(FINAL.healthcheck), env=env, cwd=image.workdir
        )
        assert await asyncio.wait_for(check.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
        text = log.read_text(errors="replace")
        log.unlink()
    assert code == 0, text
    state = image.path(FINAL.env["APINALYTICS_HOME"])
    assert sorted(p.name for p in state.iterdir()) == ["session_secret"]


async def test_without_a_writable_state_directory_the_start_fails(
    image: Image, database_url: str
) -> None:
    """The old image's failure: state under the read-only WORKDIR (the default
    ``.apinalytics``) cannot be written, and the process exits instead of serving."""
    env = image.env(database_url, free_port())
    del env["APINALYTICS_HOME"]
    log = image.root.parent / f"{image.root.name}.log"
    proc = await start(image, env, log)
    try:
        code = await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        text = log.read_text(errors="replace")
        log.unlink()
    assert code != 0
    assert "Permission denied" in text or "Read-only" in text, text

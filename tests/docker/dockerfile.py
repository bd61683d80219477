"""A reader of docker/Dockerfile's instructions, so that tests take the image's start
command, environment, user and files from the Dockerfile itself instead of a copy."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
# BuildKit's ignore file for that Dockerfile (the build context is the checkout).
DOCKERIGNORE = ROOT / "docker" / "Dockerfile.dockerignore"


@dataclass
class Copy:
    sources: list[str]
    dest: str
    from_stage: str | None = None


@dataclass
class Stage:
    image: str
    name: str | None = None
    workdir: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    cmd: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    expose: list[str] = field(default_factory=list)
    copies: list[Copy] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuation lines joined, comments out."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def _exec_form(args: str, what: str) -> list[str]:
    assert args.startswith("["), f"{what} must be in JSON (exec) form: {args}"
    argv = json.loads(args)
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    return argv


def stages(path: Path = DOCKERFILE) -> list[Stage]:
    result: list[Stage] = []
    for keyword, args in instructions(path.read_text()):
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            result.append(Stage(image=words[0], name=name))
            continue
        stage = result[-1]
        if keyword == "WORKDIR":
            stage.workdir = str(Path(stage.workdir) / args)
        elif keyword == "ENV":
            for pair in shlex.split(args):
                key, sep, value = pair.partition("=")
                assert sep, f"ENV takes KEY=VALUE pairs, not {pair!r}"
                stage.env[key] = value
        elif keyword == "USER":
            stage.user = args
        elif keyword == "CMD":
            stage.cmd = _exec_form(args, "CMD")
        elif keyword == "HEALTHCHECK":
            options, _, command = args.partition("CMD ")
            assert all(o.startswith("--") for o in options.split()), args
            stage.healthcheck = _exec_form(command.strip(), "HEALTHCHECK")
        elif keyword == "EXPOSE":
            stage.expose.extend(args.split())
        elif keyword == "RUN":
            stage.runs.append(args)
        elif keyword == "COPY":
            words = shlex.split(args)
            flags = [w for w in words if w.startswith("--")]
            paths = [w for w in words if not w.startswith("--")]
            source_stage = next(
                (f.partition("=")[2] for f in flags if f.startswith("--from=")), None
            )
            stage.copies.append(Copy(paths[:-1], paths[-1], source_stage))
    return result


def ignored_names(path: Path = DOCKERIGNORE) -> set[str]:
    """The names the ignore file leaves out at any depth (its ``**/NAME`` lines)."""
    names = set()
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("**/"):
            names.add(line[3:])
    return names

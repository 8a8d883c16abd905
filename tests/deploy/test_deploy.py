"""Deployment: the container image replayed without a container runtime (its wheel built by the
Dockerfile's own builder step, installed into a fresh venv, run as the image's uid from a
read-only working directory with the Dockerfile's ENV), the Dockerfile linted, the k8s
manifests validated offline, and compose checked for dangling references."""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import kubernetes_validate
import pytest
import yaml

from bridge.config import ConfigError, all_fields, env_name, load_settings
from bridge.startup import WEB_FILES

from ..support.cluster import Http
from ..support.ports import free_port
from ..support.requires import require
from ..support.rtc_client import RtcClient
from ..support.spectrum import dominant_frequency

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY = ROOT / "deploy"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

KNOWN_SETTINGS = {env_name(f.name) for f in all_fields()}
PENDING_SETTINGS: set[str] = set()
"""Settings the deployment files set ahead of the code (issue 14: the media port range)."""


# --- the Dockerfile, parsed -------------------------------------------------------------------


@dataclass
class Instr:
    cmd: str
    args: str
    stage: int


def parse_dockerfile(text: str) -> list[Instr]:
    """Instructions with continuation lines joined and comments dropped, numbered by stage."""
    out: list[Instr] = []
    stage = -1
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not buf) or (not line and buf):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        cmd, _, args = buf.partition(" ")
        cmd = cmd.upper()
        if cmd == "FROM":
            stage += 1
        out.append(Instr(cmd, args.strip(), stage))
        buf = ""
    return out


def env_of(instrs: list[Instr], stage: int) -> dict[str, str]:
    env: dict[str, str] = {}
    for i in instrs:
        if i.cmd == "ENV" and i.stage == stage:
            words = shlex.split(i.args)
            if all("=" in w for w in words):
                env.update(w.split("=", 1) for w in words)
            else:
                env[words[0]] = " ".join(words[1:])
    return env


def json_or_words(args: str) -> list[str]:
    return json.loads(args) if args.startswith("[") else args.split()


def lint_dockerfile(text: str) -> list[str]:
    """The image's rules; returns what breaks them (empty: all kept)."""
    instrs = parse_dockerfile(text)
    problems: list[str] = []
    froms = [i for i in instrs if i.cmd == "FROM"]
    if len(froms) < 2:
        problems.append("not multi-stage: one FROM")
    final = froms[-1].stage if froms else 0
    stages: set[str] = set()
    for f in froms:
        words = [w for w in f.args.split() if not w.startswith("--")]
        image = words[0]
        if image.lower() not in stages and "@sha256:" not in image:
            last = image.rsplit("/", 1)[-1]
            tag = last.split(":", 1)[1] if ":" in last else ""
            if not tag:
                problems.append(f"FROM {image}: no tag")
            elif tag == "latest":
                problems.append(f"FROM {image}: latest tag")
            elif not re.match(r"^v?\d+\.\d+\.\d+", tag):
                problems.append(f"FROM {image}: tag {tag!r} is not an exact version")
        if len(words) >= 3 and words[1].lower() == "as":
            stages.add(words[2].lower())
    if re.search(r":latest\b", text):
        problems.append("a latest tag")
    users = [i for i in instrs if i.cmd == "USER"]
    if not users or users[-1].stage != final:
        problems.append("no USER in the final stage")
    elif users[-1].args.split(":")[0] in ("root", "0"):
        problems.append(f"last USER is root: {users[-1].args}")
    checks = [i for i in instrs if i.cmd == "HEALTHCHECK" and i.stage == final]
    if not checks or checks[-1].args.upper() == "NONE" or "/healthz" not in checks[-1].args:
        problems.append("no HEALTHCHECK on /healthz")
    env = env_of(instrs, final)
    data_dir = env.get("BRIDGE_DATA_DIR", "")
    if not data_dir.startswith("/"):
        problems.append(f"BRIDGE_DATA_DIR not absolute: {data_dir!r}")
    if not env.get("BRIDGE_MEDIA_DIR", "").startswith("/"):
        problems.append("BRIDGE_MEDIA_DIR not absolute")
    volumes = [
        v for i in instrs if i.cmd == "VOLUME" and i.stage == final for v in json_or_words(i.args)
    ]
    if not data_dir or data_dir not in volumes:
        problems.append(f"BRIDGE_DATA_DIR {data_dir!r} is not a VOLUME")
    exposed = [p for i in instrs if i.cmd == "EXPOSE" and i.stage == final for p in i.args.split()]
    rtp = env.get("BRIDGE_RTP_PORTS", "")
    if not rtp or f"{rtp}/udp" not in exposed:
        problems.append(f"the UDP range BRIDGE_RTP_PORTS={rtp!r} is not exposed")
    if f"{env.get('BRIDGE_PORT', '8080')}/tcp" not in exposed:
        problems.append("the HTTP port is not exposed")
    if not any(i.cmd == "ENTRYPOINT" and i.stage == final for i in instrs):
        problems.append("no ENTRYPOINT")
    return problems


def test_dockerfile_lint_passes() -> None:
    assert lint_dockerfile(DOCKERFILE.read_text()) == []


@pytest.mark.parametrize(
    ("pattern", "replacement", "expected"),
    [
        (r"USER 10001:10001", "USER root", "last USER is root"),
        (r"(ENTRYPOINT .*)", r"\1\nUSER 0", "last USER is root"),
        (r"USER 10001:10001\n", "", "no USER"),
        (r"HEALTHCHECK(.|\n)*?\]\n", "", "HEALTHCHECK"),
        (r"FROM python:[^ \n]+ AS builder", "FROM python:latest AS builder", "latest"),
        (r"FROM python:[^ \n]+\n", "FROM python:3.11-slim\n", "exact version"),
        (r"FROM python:[^ \n]+\n", "FROM python\n", "no tag"),
        (r"VOLUME .*\n", "", "VOLUME"),
        (r"EXPOSE [0-9-]+/udp", "EXPOSE 40000/udp", "UDP range"),
        (r"BRIDGE_DATA_DIR=/var/lib/bridge ", "BRIDGE_DATA_DIR=data ", "not absolute"),
    ],
)
def test_dockerfile_lint_catches(pattern: str, replacement: str, expected: str) -> None:
    text = DOCKERFILE.read_text()
    broken, n = re.subn(pattern, replacement, text, count=1)
    assert n == 1, f"the mutation {pattern!r} no longer applies to the Dockerfile"
    problems = lint_dockerfile(broken)
    assert any(expected in p for p in problems), problems


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes; a directory pattern
    covers what is under it."""
    excluded = False
    for pat in patterns:
        negate = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        candidates = [path] + [path[: m.start()] for m in re.finditer("/", path)]
        if pat.startswith("**/"):
            hit = any(fnmatch.fnmatch(c.rsplit("/", 1)[-1], pat[3:]) for c in candidates)
        else:
            hit = any(fnmatch.fnmatch(c, pat) for c in candidates)
        if hit:
            excluded = not negate
    return excluded


def test_dockerignore_keeps_what_the_build_copies_and_nothing_else() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = [
        src
        for i in parse_dockerfile(DOCKERFILE.read_text())
        if i.cmd == "COPY" and not i.args.startswith("--from")
        for src in shlex.split(i.args)[:-1]
    ]
    assert copied, "the builder copies nothing"
    for src in copied:
        for f in [ROOT / src] if (ROOT / src).is_file() else (ROOT / src).rglob("*"):
            rel = f.relative_to(ROOT).as_posix()
            if f.is_file() and "__pycache__" not in rel:
                assert not dockerignore_excludes(rel, patterns), rel
    for web in WEB_FILES:
        assert not dockerignore_excludes(f"web/{web}", patterns)
    for out in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        "data/x.wav",
        "bridge/__pycache__/app.cpython-311.pyc",
    ):
        assert dockerignore_excludes(out, patterns), out


def test_the_wheel_lists_every_package_and_maps_web_to_bridge_web() -> None:
    """The package list is written out (web/ ships as bridge.web, which no directory search
    finds), so a new package under bridge/ must be added there or the image would lack it."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(tool["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "bridge").rglob("__init__.py")
    }
    assert on_disk - listed == set(), "add these packages to [tool.setuptools] packages"
    assert tool["package-dir"] == {"bridge.web": "web"}
    assert {p for p in listed if p.split(".")[0] == "bridge"} - on_disk == {"bridge.web"}
    shipped = tool["package-data"]["bridge.web"]
    for name in WEB_FILES:
        assert (ROOT / "web" / name).is_file(), name
        assert any(fnmatch.fnmatch(name, pattern) for pattern in shipped), name


# --- the image, replayed ------------------------------------------------------------------------


@dataclass
class Image:
    root: Path
    venv: Path
    site: Path
    workdir: Path
    volume: Path
    volume_path: str
    uid: int
    gid: int
    env: dict[str, str]
    entrypoint: list[str]
    healthcheck: list[str]


def uid_of(stage: list[Instr]) -> str:
    return [i.args for i in stage if i.cmd == "USER"][-1].split(":")[0]


def python_for(uid: int) -> str:
    """A Python >= 3.11 with venv that ``uid`` can run (this machine's own may live under
    root's home, as pyenv's does); Debian's python3 (python3-venv: make system-deps) is one."""
    for exe in (sys._base_executable, "/usr/bin/python3.11", "/usr/bin/python3"):
        probe = "import sys, venv, ensurepip; assert sys.version_info >= (3, 11)"
        try:
            ok = subprocess.run(
                [exe, "-c", probe], user=uid, capture_output=True, timeout=30, cwd="/"
            )
        except OSError:
            continue
        if ok.returncode == 0:
            return exe
    require(
        False,
        f"a Python >= 3.11 with venv that uid {uid} can run",
        "apt-get install python3-venv (make test installs it)",
    )
    raise AssertionError("unreachable")


def replay_image(root: Path) -> Image:
    """The Dockerfile's steps on this machine: the builder's COPY and RUN lines executed as
    written (paths mapped under ``root``), the runtime's ``pip install`` of the wheel into a
    fresh venv (reusing pip's cache), its WORKDIR root-owned and read-only, its VOLUME a
    directory owned by its USER."""
    instrs = parse_dockerfile(DOCKERFILE.read_text())
    final = instrs[-1].stage
    builder = [i for i in instrs if i.stage == 0]
    runtime = [i for i in instrs if i.stage == final]
    shim = root / "shim"
    shim.mkdir()
    (shim / "pip").write_text(f'#!/bin/sh\nexec {sys.executable} -m pip "$@"\n')
    (shim / "pip").chmod(0o755)
    wheels = root / "wheels"

    # Builder stage.
    ctx = root / "src"
    ctx.mkdir()
    workdir = "/"
    for i in builder:
        if i.cmd == "WORKDIR":
            workdir = i.args
        elif i.cmd == "COPY":
            *srcs, dest = shlex.split(i.args)
            for src in srcs:
                target = ctx / dest.removeprefix("./") if not dest.endswith("/") else ctx / dest
                if (ROOT / src).is_dir():
                    shutil.copytree(
                        ROOT / src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
                    )
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy(ROOT / src, target / src)
        elif i.cmd == "RUN":
            cmd = i.args.replace("/wheels", str(wheels))
            subprocess.run(
                ["sh", "-c", cmd],
                cwd=ctx,
                env=dict(os.environ, PATH=f"{shim}:{os.environ['PATH']}"),
                check=True,
                capture_output=True,
                timeout=300,
            )
    assert workdir == "/src"
    built = list(wheels.glob("*.whl"))
    assert len(built) == 1, built

    # Runtime stage.
    copies = [i.args for i in runtime if i.cmd == "COPY"]
    assert copies == ["--from=builder /wheels /wheels"], copies
    runs = [i.args for i in runtime if i.cmd == "RUN"]
    install = runs[0].split("&&")[0].strip()
    assert install.startswith("pip install") and "/wheels/*.whl" in install, install
    venv = root / "venv"
    # The venv without a pip of its own: ensurepip's unpacking was ~5 s of CPU, and the image's
    # pip is the base image's anyway, not that one. This machine's pip installs into it, run by
    # the venv's interpreter (``--python``), as it built the wheel in the builder stage.
    subprocess.run(
        [python_for(int(uid_of(runtime))), "-m", "venv", "--without-pip", str(venv)],
        check=True,
        timeout=120,
    )
    (shim / "pip").write_text(
        f'#!/bin/sh\nexec {sys.executable} -m pip --python {venv}/bin/python "$@"\n'
    )
    install = install.replace("--no-cache-dir", "").replace("/wheels/*.whl", str(built[0]))
    subprocess.run(
        ["sh", "-c", install + " --quiet --disable-pip-version-check"],
        env=dict(os.environ, PATH=f"{shim}:{venv}/bin:{os.environ['PATH']}"),
        check=True,
        capture_output=True,
        timeout=400,
    )
    (site,) = (venv / "lib").glob("python3*/site-packages")

    user = [i.args for i in runtime if i.cmd == "USER"][-1]
    uid, _, gid = user.partition(":")
    env = env_of(instrs, final)
    (volume_path,) = json_or_words([i.args for i in runtime if i.cmd == "VOLUME"][-1])
    volume = root / "volume"
    (volume / "media").mkdir(parents=True)
    for d in (volume, volume / "media"):
        os.chown(d, int(uid), int(gid or uid))
    app = root / [i.args for i in runtime if i.cmd == "WORKDIR"][-1].lstrip("/")
    app.mkdir()
    app.chmod(0o555)
    health = [i.args for i in runtime if i.cmd == "HEALTHCHECK"][-1]
    cmd = health[health.index("CMD ") + 4 :]
    return Image(
        root=root,
        venv=venv,
        site=site,
        workdir=app,
        volume=volume,
        volume_path=volume_path,
        uid=int(uid),
        gid=int(gid or uid),
        env=env,
        entrypoint=json.loads([i.args for i in runtime if i.cmd == "ENTRYPOINT"][-1]),
        healthcheck=json.loads(cmd),
    )


@pytest.fixture(scope="module")
def image() -> Any:
    require(os.geteuid() == 0, "root (the replay runs as the image's uid)", "run as root")
    root = Path(tempfile.mkdtemp(prefix="bridge-image-"))
    root.chmod(0o755)
    try:
        yield replay_image(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


TOKEN = "deploy-test-token"


def container_env(img: Image, port: int, **changes: str | None) -> dict[str, str]:
    """What the container would see: a bare environment, the Dockerfile's ENV with the volume
    mounted, loopback-only ICE for the test, and ``changes`` (``None`` removes)."""
    env = {"PATH": f"{img.venv}/bin:/usr/local/bin:/usr/bin:/bin", "HOME": "/", "LANG": "C.UTF-8"}
    for key, value in img.env.items():
        if value == img.volume_path or value.startswith(img.volume_path + "/"):
            value = str(img.volume) + value[len(img.volume_path) :]
        env[key] = value
    env.update(
        BRIDGE_HOST="127.0.0.1",
        BRIDGE_PORT=str(port),
        BRIDGE_API_TOKENS=TOKEN,
        BRIDGE_ICE_ADDRESSES="127.0.0.1",
        BRIDGE_STUN_URLS="",
        BRIDGE_SIM_ANSWER_DELAY="0.1",
    )
    for key, change in changes.items():
        if change is None:
            env.pop(key, None)
        else:
            env[key] = change
    return env


def run_as(img: Image, argv: list[str], env: dict[str, str], **kw: Any) -> Any:
    return subprocess.run(
        argv,
        cwd=img.workdir,
        env=env,
        user=img.uid,
        group=img.gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=60,
        **kw,
    )


async def start_bridge(img: Image, env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    exe = shutil.which(img.entrypoint[0], path=env["PATH"])
    assert exe is not None and exe.startswith(str(img.venv)), exe
    with log.open("wb") as out:
        return await asyncio.create_subprocess_exec(
            exe,
            *img.entrypoint[1:],
            cwd=img.workdir,
            env=env,
            user=img.uid,
            group=img.gid,
            extra_groups=[],
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )


async def wait_healthy(proc: asyncio.subprocess.Process, base: str, log: Path) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            if proc.returncode is not None:
                raise AssertionError(f"the bridge exited {proc.returncode}: {log.read_text()}")
            try:
                async with session.get(base + "/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"never healthy: {log.read_text()}")


@pytest.mark.timeout(600)
async def test_image_serves_the_demo_the_client_and_a_call(image: Image) -> None:
    img = image
    assert not list(img.site.glob("__editable__*")), "the replay must not be an editable install"
    port = free_port()
    env = container_env(img, port)
    where = run_as(img, ["python", "-c", "import bridge; print(bridge.__file__)"], env)
    assert where.stdout.strip() == str(img.site / "bridge" / "__init__.py"), where
    log = img.root / "bridge.log"
    proc = await start_bridge(img, env, log)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        await wait_healthy(proc, base, log)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)", status, re.M)
        assert uids is not None and {int(uids[1]), int(uids[2])} == {img.uid}, status
        # The image's HEALTHCHECK command, as Docker would run it inside the container.
        check = await asyncio.to_thread(run_as, img, img.healthcheck, env)
        assert check.returncode == 0, check.stderr

        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/") as r:
                assert r.status == 200
                assert r.content_type == "text/html"
                page = await r.read()
            assert page == (img.site / "bridge/web/index.html").read_bytes()
            assert page == (ROOT / "web/index.html").read_bytes()
            async with session.get(base + "/web/bridge-client.js") as r:
                assert r.status == 200
                assert "javascript" in r.content_type
                js = await r.read()
            assert js == (ROOT / "web/bridge-client.js").read_bytes()
            assert b"export class BridgeClient" in js
            async with session.get(base + "/web/__init__.py") as r:
                assert r.status == 404  # the file that makes web/ a package is not served

            async with session.post(
                base + "/call/make", json={"phone": "5521999999999"}, headers=headers
            ) as r:
                assert r.status == 201
                call = await r.json()
            rtc = RtcClient(Http(session, base), call["callID"], freq=523.0, headers=headers)
            try:
                await rtc.offer()
                await asyncio.wait_for(rtc.connected.wait(), 10)
                await rtc.recorder.tone_arrives(523.0)
                t_audio = time.monotonic()
                await asyncio.sleep(1.0)
                heard = rtc.recorder.since(t_audio)
                assert heard.size > 0.8 * rtc.recorder.rate
                assert dominant_frequency(heard, rtc.recorder.rate) == pytest.approx(523, abs=5)
            finally:
                await rtc.close()
        # It wrote where the volume is, as the image's user, and nowhere else.
        for sub in ("assets", "files/calls"):
            assert (img.volume / sub).stat().st_uid == img.uid
        assert not any(img.workdir.iterdir())
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "Traceback" not in text, text


@pytest.mark.timeout(600)
@pytest.mark.parametrize("data_dir", ["image default", "unset"])
def test_image_without_a_writable_data_dir_refuses_in_one_line(image: Image, data_dir) -> None:
    img = image
    if data_dir == "image default":
        # The Dockerfile's ENV as is, with no volume mounted: /var/lib/bridge on this machine
        # does not exist and its parent is root's.
        if Path(img.env["BRIDGE_DATA_DIR"]).exists():
            pytest.skip(f"{img.env['BRIDGE_DATA_DIR']} exists on this machine")
        env = container_env(img, free_port(), BRIDGE_DATA_DIR=img.env["BRIDGE_DATA_DIR"])
        shown = repr(img.env["BRIDGE_DATA_DIR"])
    else:
        # No BRIDGE_DATA_DIR at all: the relative default under the read-only workdir.
        env = container_env(img, free_port(), BRIDGE_DATA_DIR=None)
        shown = f"'data': {img.workdir / 'data'}"
    done = run_as(img, img.entrypoint, env)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and f"BRIDGE_DATA_DIR={shown}" in lines[0], lines
    assert "not a writable directory" in lines[0]


@pytest.mark.timeout(600)
def test_image_without_its_web_assets_refuses_in_one_line(image: Image) -> None:
    img = image
    web = img.site / "bridge" / "web"
    moved = web.with_name("web.moved")
    web.rename(moved)
    try:
        done = run_as(img, img.entrypoint, container_env(img, free_port()))
    finally:
        moved.rename(web)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and "browser client is not installed" in lines[0], lines
    assert str(web) in lines[0]


# --- k8s ------------------------------------------------------------------------------------


def k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for f in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [(f.name, d) for d in yaml.safe_load_all(f.read_text()) if d]
    return docs


def k8s_one(
    docs: list[tuple[str, dict[str, Any]]], kind: str, name: str = "webrtc-bridge"
) -> dict[str, Any]:
    """The one document of that kind named ``name`` or ``name-…`` (the bridge's, by default)."""
    (doc,) = [
        d
        for _, d in docs
        if d["kind"] == kind and re.match(rf"^{re.escape(name)}(-[a-z]+)?$", d["metadata"]["name"])
    ]
    return doc


def test_k8s_manifests_validate_offline_and_strictly() -> None:
    docs = k8s_docs()
    assert {d["kind"] for _, d in docs} >= {
        "Deployment",
        "ConfigMap",
        "Secret",
        "Service",
        "PodDisruptionBudget",
        "PersistentVolumeClaim",
    }
    version = kubernetes_validate.latest_version()
    for name, doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{name} ({doc['kind']}): {exc}") from None
    # The validator is strict: a misspelt field fails.
    deployment = k8s_one(docs, "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["hostNetwrok"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def test_k8s_deployment_wiring() -> None:
    docs = k8s_docs()

    def one(kind: str, name: str = "webrtc-bridge") -> dict[str, Any]:
        return k8s_one(docs, kind, name)

    dep, cm, secret = one("Deployment"), one("ConfigMap"), one("Secret")
    svc, pdb, pvc = one("Service"), one("PodDisruptionBudget"), one("PersistentVolumeClaim")
    pod = dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict[str, str]) -> bool:
        return bool(selector) and selector.items() <= labels.items()

    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert selects(dep["spec"]["selector"]["matchLabels"])
    assert selects(pdb["spec"]["selector"]["matchLabels"])
    assert selects(svc["spec"]["selector"])
    (term,) = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert selects(term["labelSelector"]["matchLabels"])
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0

    (c,) = pod["containers"]
    repo, _, tag = c["image"].rpartition(":")
    assert repo and tag == VERSION, c["image"]
    assert c["imagePullPolicy"] == "IfNotPresent"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["http"] == int(cm["data"]["BRIDGE_PORT"])
    (svc_port,) = svc["spec"]["ports"]
    assert svc_port["targetPort"] in ports

    env = {e["name"]: e for e in c["env"]}
    assert env["BRIDGE_PUBLIC_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    for name in ("BRIDGE_API_TOKENS", "BRIDGE_TURN_SECRET", "BRIDGE_INTERNAL_SECRET"):
        assert "secretKeyRef" in env[name]["valueFrom"], name
    secret_values = {**secret.get("stringData", {}), **secret.get("data", {})}
    for e in c["env"]:
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret_values
    assert [s["configMapRef"]["name"] for s in c["envFrom"]] == [cm["metadata"]["name"]]

    # The container's environment as the kubelet builds it: the ConfigMap, then env in order,
    # $(VAR) expanded from what is defined above it; the downward API and the Secret filled in.
    pod_ip = "10.0.0.7"
    field_values = {"status.hostIP": "203.0.113.10", "status.podIP": pod_ip}
    environ = dict(cm["data"])
    for e in c["env"]:
        if "value" in e:
            environ[e["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: environ.get(m[1], m[0]), e["value"]
            )
        elif "fieldRef" in e["valueFrom"]:
            environ[e["name"]] = field_values[e["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            environ[e["name"]] = secret_values[e["valueFrom"]["secretKeyRef"]["key"]]
    # Every setting is one the bridge knows, and together they load; other names are helpers
    # that some setting uses.
    settings_names = {n for n in environ if n.startswith("BRIDGE_")}
    assert settings_names - KNOWN_SETTINGS <= PENDING_SETTINGS, settings_names - KNOWN_SETTINGS
    for helper in set(environ) - settings_names:
        assert any(f"$({helper})" in e.get("value", "") for e in c["env"]), helper
    settings = load_settings([], environ)

    # Workers on every core, sharing the Redis Service as their call directory, reachable by
    # the other pods at this pod's IP, with the internal secret from the Secret.
    redis_dep, redis_svc = one("Deployment", "bridge-redis"), one("Service", "bridge-redis")
    assert environ["BRIDGE_WORKERS"] == "auto"
    directory = urlsplit(environ["BRIDGE_DIRECTORY"])
    assert directory.scheme == "redis" and directory.hostname == redis_svc["metadata"]["name"]
    (redis_port,) = redis_svc["spec"]["ports"]
    assert directory.port == redis_port["port"]
    redis_pod = redis_dep["spec"]["template"]
    assert redis_svc["spec"]["selector"].items() <= redis_pod["metadata"]["labels"].items()
    (redis_c,) = redis_pod["spec"]["containers"]
    assert redis_port["targetPort"] in {p["name"] for p in redis_c["ports"]}
    assert re.match(r"^redis:\d+\.\d+\.\d+", redis_c["image"]), redis_c["image"]
    assert not selects(redis_svc["spec"]["selector"])  # the bridge Service's pods are apart
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert urlsplit(environ["BRIDGE_INTERNAL_URL"]).hostname == pod_ip
    assert urlsplit(environ["BRIDGE_INTERNAL_URL"]).port not in ports.values()
    assert settings.cluster.shared and settings.cluster.internal_url.startswith("http://")
    assert env["BRIDGE_INTERNAL_SECRET"]["valueFrom"]["secretKeyRef"]["key"] == "internal-secret"
    assert environ["BRIDGE_SHUTDOWN_CALLS"] in ("hangup", "keep", "handover")

    # Recordings on the claim, at the image's data directory; the port range as in the image.
    instrs = parse_dockerfile(DOCKERFILE.read_text())
    image_env = env_of(instrs, instrs[-1].stage)
    assert cm["data"]["BRIDGE_DATA_DIR"] == image_env["BRIDGE_DATA_DIR"]
    assert cm["data"]["BRIDGE_RTP_PORTS"] == image_env["BRIDGE_RTP_PORTS"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    data = volumes[mounts[cm["data"]["BRIDGE_DATA_DIR"]]]
    assert data["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]

    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in (c["readinessProbe"], c["livenessProbe"]):
        assert probe["httpGet"]["port"] in ports
    # The grace period covers the preStop pause plus the bridge's own bounded shutdown (10 s).
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + 10
    # Draining (handover): calls that cannot move are served up to BRIDGE_DRAIN_TIMEOUT, and
    # the supervisor waits that plus its margin before it kills a worker: all of it fits.
    from bridge.__main__ import drain_timeout

    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + drain_timeout(settings)

    uid = [i.args for i in instrs if i.cmd == "USER"][-1].split(":")[0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(uid) != 0
    assert c["securityContext"]["allowPrivilegeEscalation"] is False


# --- compose --------------------------------------------------------------------------------

SAMPLE_ENV = {
    "BRIDGE_API_TOKENS": "tok",
    "BRIDGE_PUBLIC_IP": "203.0.113.10",
    "TURN_SECRET": "turn-secret",
    "BRIDGE_INTERNAL_SECRET": "internal-secret-0123456789",
    "GRAFANA_ADMIN_PASSWORD": "pw",
}


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}``."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m[1], m[2], m[3]
        if env.get(name):
            return env[name]
        if op == ":?":
            raise KeyError(f"{name}: {arg}")
        return arg or ""

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)([^}]*))?\}", sub, value)


def compose_problems(doc: dict[str, Any], base: Path) -> list[str]:
    """Dangling references in a compose file; empty when every one resolves."""
    problems = []
    services = doc.get("services", {})
    declared = set(doc.get("volumes") or {})
    used = set()
    for name, svc in services.items():
        if svc.get("restart") != "unless-stopped":
            problems.append(f"{name}: restart is not unless-stopped")
        test = (svc.get("healthcheck") or {}).get("test")
        if not test or test[0] not in ("CMD", "CMD-SHELL"):
            problems.append(f"{name}: no healthcheck")
        for dep in svc.get("depends_on", {}):
            if dep not in services:
                problems.append(f"{name}: depends_on unknown service {dep}")
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0]
            if source.startswith((".", "/")):
                if not (base / source).exists():
                    problems.append(f"{name}: mounts missing file {source}")
            else:
                used.add(source)
                if source not in declared:
                    problems.append(f"{name}: volume {source} is not declared")
        build = svc.get("build")
        if build is not None:
            dockerfile = base / build["context"] / build.get("dockerfile", "Dockerfile")
            if not dockerfile.is_file():
                problems.append(f"{name}: no Dockerfile at {dockerfile}")
        if "image" not in svc and build is None:
            problems.append(f"{name}: neither image nor build")
        elif "image" in svc and svc["image"].rsplit(":", 1)[-1] in ("latest", svc["image"]):
            problems.append(f"{name}: image {svc['image']} is not pinned")
    for vol in declared - used:
        problems.append(f"volume {vol} is declared and never used")
    return problems


def load_compose() -> dict[str, Any]:
    return interpolate(yaml.safe_load((DEPLOY / "compose.yaml").read_text()), SAMPLE_ENV)


def test_compose_references_resolve() -> None:
    doc = load_compose()
    assert set(doc["services"]) == {"bridge", "redis", "coturn", "prometheus", "grafana"}
    assert compose_problems(doc, DEPLOY) == []
    build = doc["services"]["bridge"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE


@pytest.mark.parametrize(
    ("service", "change", "expected"),
    [
        ("bridge", {"volumes": ["undeclared:/var/lib/bridge"]}, "not declared"),
        ("prometheus", {"volumes": ["./prometheus/missing.yml:/etc/x.yml:ro"]}, "missing file"),
        ("grafana", {"depends_on": {"nope": {"condition": "service_started"}}}, "unknown service"),
        ("coturn", {"healthcheck": None}, "no healthcheck"),
        ("coturn", {"restart": "always"}, "unless-stopped"),
        ("grafana", {"image": "grafana/grafana:latest"}, "not pinned"),
        ("bridge", {"build": {"context": "..", "dockerfile": "deploy/Dockerfile"}}, "Dockerfile"),
    ],
)
def test_compose_checker_catches(service: str, change: dict[str, Any], expected: str) -> None:
    doc = load_compose()
    doc["services"][service].update(change)
    assert any(expected in p for p in compose_problems(doc, DEPLOY))


def test_compose_services_fit_together() -> None:
    doc = load_compose()
    s = doc["services"]
    without = {k: v for k, v in SAMPLE_ENV.items() if k != "TURN_SECRET"}
    with pytest.raises(KeyError, match="TURN_SECRET"):
        interpolate(yaml.safe_load((DEPLOY / "compose.yaml").read_text()), without)

    # The bridge: settings it knows and accepts, recordings on the image's volume.
    environ = {k: str(v) for k, v in s["bridge"]["environment"].items()}
    assert set(environ) - KNOWN_SETTINGS <= PENDING_SETTINGS
    settings = load_settings([], environ)
    assert settings.ice.turn_secret == SAMPLE_ENV["TURN_SECRET"] and settings.ice.turn_urls
    # Two workers sharing the compose Redis (which it waits for), on loopback only.
    assert settings.cluster.worker_count(cores=8) == 2
    assert settings.cluster.internal_secret == SAMPLE_ENV["BRIDGE_INTERNAL_SECRET"]
    redis_args = s["redis"]["command"]
    redis_addr = redis_args[redis_args.index("--bind") + 1]
    redis_port = redis_args[redis_args.index("--port") + 1]
    assert redis_addr == "127.0.0.1"
    assert settings.cluster.directory == f"redis://{redis_addr}:{redis_port}/0"
    assert s["bridge"]["depends_on"]["redis"]["condition"] == "service_healthy"
    instrs = parse_dockerfile(DOCKERFILE.read_text())
    image_env = env_of(instrs, instrs[-1].stage)
    assert f"bridge-data:{image_env['BRIDGE_DATA_DIR']}" in s["bridge"]["volumes"]
    # coturn checks the credentials the bridge mints from the same secret.
    assert f"--static-auth-secret={SAMPLE_ENV['TURN_SECRET']}" in s["coturn"]["command"]
    assert "--use-auth-secret" in s["coturn"]["command"]
    opts = dict(a.removeprefix("--").split("=", 1) for a in s["coturn"]["command"] if "=" in a)
    low, high = (int(p) for p in image_env["BRIDGE_RTP_PORTS"].split("-"))
    assert int(opts["max-port"]) < low or int(opts["min-port"]) > high, "port ranges overlap"

    # Prometheus: the shipped config and its rule files, scraping the bridge's port.
    mounts = dict(v.split(":")[:2] for v in s["prometheus"]["volumes"])
    assert mounts["./prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    prom = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    for rule in prom["rule_files"]:
        assert f"/etc/prometheus/{rule}" in mounts.values(), rule
    targets = [
        t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    ]
    assert f"127.0.0.1:{image_env['BRIDGE_PORT']}" in targets
    listen = [a for a in s["prometheus"]["command"] if a.startswith("--web.listen-address=")]

    # Grafana: provisioned with that Prometheus and the shipped dashboard.
    gmounts = dict(v.split(":")[:2] for v in s["grafana"]["volumes"])
    prov = {t: src for src, t in gmounts.items()}
    ds_dir = DEPLOY / prov["/etc/grafana/provisioning/datasources"]
    (ds,) = [d for f in ds_dir.glob("*.yaml") for d in yaml.safe_load(f.read_text())["datasources"]]
    assert ds["type"] == "prometheus" and ds["isDefault"] is True
    assert ds["url"] == "http://" + listen[0].split("=", 1)[1]
    db_dir = DEPLOY / prov["/etc/grafana/provisioning/dashboards"]
    (provider,) = [
        p for f in db_dir.glob("*.yaml") for p in yaml.safe_load(f.read_text())["providers"]
    ]
    target = gmounts["./grafana/bridge.json"]
    assert Path(target).parent == Path(provider["options"]["path"])
    dashboard = json.loads((DEPLOY / "grafana/bridge.json").read_text())
    assert dashboard["uid"] and dashboard["panels"]
    (var,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert var["query"] == ds["type"]


def test_settings_reject_what_the_deploy_files_would_hide() -> None:
    """The settings checks the two tests above rely on do fail on a bad value."""
    with pytest.raises(ConfigError):
        load_settings([], {"BRIDGE_HOST": "0.0.0.0"})
    with pytest.raises(ConfigError):
        load_settings([], {"BRIDGE_TURN_URLS": "turn:x:3478"})

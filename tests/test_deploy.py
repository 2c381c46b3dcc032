"""Apps deployed to running servers: content-addressed, versioned, rolled back, provisioned on use.

Every test talks to real ``edge-server`` processes with CurveZMQ keys: alice's
key is in ``--deployers``, bob's is authorized to call but not to deploy.
Hostile bundles are sent as raw control requests (a JSON manifest, the
files' bytes as frames) and must leave nothing behind in the data directory.
"""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
import time
import uuid
import zipfile
from pathlib import Path

import pytest
import zmq.auth

import offload
from offload import bundle, deploy
from offload.runtime import bundles


def _keys(tmp: Path) -> dict[str, Path]:
    (tmp / "keys").mkdir(parents=True)
    for name in ("server", "alice", "bob"):
        zmq.auth.create_certificates(str(tmp / "keys"), name)
    for name, people in (("allowed", ("alice", "bob")), ("deployers", ("alice",))):
        (tmp / name).mkdir()
        for who in people:
            (tmp / name / f"{who}.key").write_bytes((tmp / "keys" / f"{who}.key").read_bytes())
    return {
        "server_key": tmp / "keys" / "server.key",
        "alice": tmp / "keys" / "alice.key_secret",
        "bob": tmp / "keys" / "bob.key_secret",
    }


class Edge:
    """A server with deployers, its keys, and its data directory."""

    def __init__(self, tmp: Path, make_server, *extra: str, deployers: bool = True) -> None:
        self.tmp = tmp
        self.keys = _keys(tmp)
        self.data = tmp / "data"
        self.extra = extra
        self.deployers = deployers
        self.make_server = make_server
        self.start()

    def start(self) -> None:
        args = [
            "--secret-key",
            str(self.tmp / "keys" / "server.key_secret"),
            "--authorized-keys",
            str(self.tmp / "allowed"),
            "--data-dir",
            str(self.data),
            *self.extra,
        ]
        if self.deployers:
            args += ["--deployers", str(self.tmp / "deployers")]
        self.server = self.make_server(*args, workers=2)

    def client(self, who: str = "alice", **settings) -> offload.Client:
        return offload.Client(
            self.server,
            server_key=str(self.keys["server_key"]),
            client_key=str(self.keys[who]),
            heartbeat_timeout=30,
            **settings,
        )

    def tree(self) -> list[str]:
        """Every path under the apps directory (what a refused deployment must not change)."""
        apps = self.data / "apps"
        return sorted(str(p.relative_to(apps)) for p in apps.rglob("*")) if apps.exists() else []


@pytest.fixture
def edge(tmp_path, make_server) -> Edge:
    return Edge(tmp_path, make_server)


def _module(directory: Path, name: str, source: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


def _fresh(name: str, monkeypatch, directory: Path):
    """Import ``name`` from ``directory`` on the client (after the server started)."""
    monkeypatch.syspath_prepend(str(directory))
    sys.modules.pop(name, None)
    importlib.invalidate_caches()
    return importlib.import_module(name)


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


# -- deploying, versions, rollback ----------------------------------------------------------------


def test_a_package_deploys_and_serves_without_a_restart_and_only_changed_files_travel(
    edge, tmp_path, monkeypatch
):
    name = _unique("dpkg")
    package = tmp_path / "src" / name
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "data" / "table.txt").write_text("7\n")
    core = package / "core.py"
    core.write_text(
        textwrap.dedent(
            """
            from pathlib import Path

            from offload import offload

            TABLE = Path(__file__).parent / "data" / "table.txt"


            @offload
            def scaled(x):
                return x * int(TABLE.read_text())
            """
        )
    )
    with edge.client() as client:
        remote = client.servers.require()
        first = deploy.deploy(remote, bundle.pack(package))
        assert (first.version, first.sent_files, first.total_files) == (1, 3, 3)
        assert not first.unchanged and first.setup_s > 0
        module = _fresh(f"{name}.core", monkeypatch, tmp_path / "src")
        assert first.functions == {f"{name}.core:scaled": module.scaled.fingerprint.hex()}
        assert client.call(module.scaled, (6,), {}, mode="remote") == 42  # its data file too

        again = deploy.deploy(remote, bundle.pack(package))  # the same bundle: nothing travels
        assert again.unchanged and again.version == 1 and again.sent_files == 0

        core.write_text(core.read_text().replace("x * int", "-x * int"))
        second = deploy.deploy(remote, bundle.pack(package))
        assert (second.version, second.sent_files, second.total_files) == (2, 1, 3)
        assert second.sent_bytes == core.stat().st_size  # content-addressed: one file moved
        module = _fresh(f"{name}.core", monkeypatch, tmp_path / "src")
        assert client.call(module.scaled, (6,), {}, mode="remote") == -42

        listed = {a["app"]: a for a in deploy.apps(remote)}
        assert listed[name]["current"] == 2 and listed["tests.apps"]["source"] == "--app"
        assert [v["version"] for v in listed[name]["versions"]] == [2, 1]
        assert listed[name]["functions"][f"{name}.core:scaled"] == module.scaled.fingerprint.hex()

        back = deploy.rollback(remote, name)
        assert (back["version"], back["previous"]) == (1, 2)
        with pytest.raises(offload.VersionMismatch):  # this client holds version 2's code
            client.call(module.scaled, (6,), {}, mode="remote")
        # Deploying version 2's bundle again serves the copy still there: nothing travels.
        forward = deploy.deploy(remote, bundle.pack(package))
        assert (forward.version, forward.sent_files) == (2, 0)
        assert client.call(module.scaled, (6,), {}, mode="remote") == -42
    assert not [p for p in edge.tree() if ".staging-" in p]


def test_a_running_job_finishes_on_its_version_while_the_next_call_gets_the_new_one(
    edge, tmp_path, monkeypatch
):
    name = _unique("dslow")
    source = """
        import os
        import time

        from offload import offload


        @offload
        def which(seconds):
            time.sleep(seconds)
            return VERSION, os.getpid()


        VERSION = {version}
    """
    _module(tmp_path / "src", name, source.format(version=1))
    with edge.client() as client:
        remote = client.servers.require()
        deploy.deploy(remote, bundle.pack(tmp_path / "src" / f"{name}.py"))
        module = _fresh(name, monkeypatch, tmp_path / "src")
        running = client.submit(module.which, 3.0)
        deadline = time.monotonic() + 20
        while not client.server.jobs(states=["running"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.server.jobs(states=["running"]), "the job never started"

        _module(tmp_path / "src", name, source.format(version=2))
        done = deploy.deploy(remote, bundle.pack(tmp_path / "src" / f"{name}.py"))
        assert done.version == 2 and not running.done()
        module = _fresh(name, monkeypatch, tmp_path / "src")
        new_version, new_pid = client.call(module.which, (0.0,), {}, mode="remote")
        old_version, old_pid = running.result(timeout=30)
    assert (old_version, new_version) == (1, 2)
    assert old_pid != new_pid  # a new generation of workers imported version 2


def test_a_module_file_and_a_wheel_deploy(edge, tmp_path, monkeypatch):
    single = _unique("dmod")
    path = _module(
        tmp_path / "one",
        single,
        """
        from offload import offload


        @offload
        def square(x):
            return x * x
        """,
    )
    wheel_pkg = _unique("dwheel")
    wheel = tmp_path / f"{wheel_pkg}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"{wheel_pkg}/__init__.py", "from .ops import cube\n")
        archive.writestr(
            f"{wheel_pkg}/ops.py",
            "from offload import offload\n\n\n@offload\ndef cube(x):\n    return x ** 3\n",
        )
        archive.writestr(f"{wheel_pkg}-1.0.dist-info/METADATA", "Name: x\nVersion: 1.0\n")
        archive.writestr(f"{wheel_pkg}-1.0.data/scripts/tool", "#!/bin/sh\n")
    with edge.client() as client:
        remote = client.servers.require()
        assert deploy.deploy(remote, bundle.pack(path)).version == 1
        shipped = bundle.pack(wheel)
        assert shipped.app == wheel_pkg and not any("scripts" in e.path for e in shipped.files)
        assert deploy.deploy(remote, shipped).functions.keys() == {f"{wheel_pkg}.ops:cube"}
        mod = _fresh(single, monkeypatch, tmp_path / "one")
        assert client.call(mod.square, (7,), {}, mode="remote") == 49
        monkeypatch.syspath_prepend(str(wheel))  # a wheel imports from its zip, here
        ops = importlib.import_module(f"{wheel_pkg}.ops")
        assert client.call(ops.cube, (3,), {}, mode="remote") == 27


def test_deployed_apps_are_served_after_a_restart(tmp_path, make_server, monkeypatch):
    edge = Edge(tmp_path, make_server)
    name = _unique("dkeep")
    _module(
        tmp_path / "src",
        name,
        "from offload import offload\n\n\n@offload\ndef inc(x):\n    return x + 1\n",
    )
    with edge.client() as client:
        deploy.deploy(client.servers.require(), bundle.pack(tmp_path / "src" / f"{name}.py"))
    edge.server.stop()
    edge.start()
    module = _fresh(name, monkeypatch, tmp_path / "src")
    with edge.client() as client:
        assert client.call(module.inc, (1,), {}, mode="remote") == 2
        assert f"{name}:inc" in client.ping(timeout=10)["functions"]  # in the PONG, as served


# -- refused: dependencies, keys, hostile bundles -------------------------------------------------


def test_a_missing_third_party_module_is_refused_by_name_and_leaves_nothing(edge, tmp_path):
    path = _module(
        tmp_path / "src",
        _unique("ddep"),
        """
        import no_such_dependency_xyz

        from offload import offload


        @offload
        def f(x):
            return no_such_dependency_xyz.g(x)
        """,
    )
    before = edge.tree()
    with edge.client() as client, pytest.raises(offload.MissingDependency) as refused:
        deploy.deploy(client.servers.require(), bundle.pack(path))
    assert refused.value.module == "no_such_dependency_xyz"
    assert "no_such_dependency_xyz" in str(refused.value)
    assert edge.tree() == before


def test_only_keys_in_deployers_deploy_and_a_server_without_deployers_takes_none(
    tmp_path, make_server
):
    edge = Edge(tmp_path / "a", make_server)
    path = _module(tmp_path / "src", _unique("dkey"), "from offload import offload\n")
    before = edge.tree()
    with edge.client("bob") as client, pytest.raises(offload.NotADeployer, match="deployers"):
        deploy.deploy(client.servers.require(), bundle.pack(path))
    with edge.client("bob") as client, pytest.raises(offload.NotADeployer):
        deploy.rollback(client.servers.require(), "anything")
    assert edge.tree() == before
    closed = Edge(tmp_path / "b", make_server, deployers=False)
    with closed.client() as client, pytest.raises(offload.NotADeployer, match="no deployments"):
        deploy.deploy(client.servers.require(), bundle.pack(path))
    assert closed.tree() == []


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """One server for all hostile bundles: each must leave its data directory as it was."""
    from .conftest import _server

    tmp = tmp_path_factory.mktemp("hostile")
    keys = _keys(tmp)
    server = _server(
        "--secret-key",
        str(tmp / "keys" / "server.key_secret"),
        "--authorized-keys",
        str(tmp / "allowed"),
        "--deployers",
        str(tmp / "deployers"),
        "--data-dir",
        str(tmp / "data"),
        "--deploy-max-files",
        "50",
        "--deploy-max-bytes",
        "1M",
        workers=1,
    )
    client = offload.Client(
        server,
        server_key=str(keys["server_key"]),
        client_key=str(keys["alice"]),
        heartbeat_timeout=30,
    )
    yield client, tmp / "data"
    client.shutdown()
    server.stop()


GOOD = b"from offload import offload\n\n\n@offload\ndef ok(x):\n    return x\n"


def _entry(path: str, data: bytes = GOOD, kind: str = "file") -> list:
    return [path, bundles.sha256(data), len(data), kind]


def _ask(client, body: dict, blobs: list[bytes]) -> dict:
    _, future = client.servers.require().control(body, blobs)
    answer, _ = future.result(60)
    return answer


BAD = b"raise SystemExit(3)\n"
PLAIN = b"X = 1\n"
BIG = b"#" * 300_000

#: case: (manifest entries, (claimed hash, bytes) sent with it, what the refusal says)
HOSTILE = {
    "climbs": ([_entry("../evil.py")], [GOOD], "climbs"),
    "climbs inside": ([_entry("pkg/../../evil.py")], [GOOD], "climbs"),
    "absolute": ([_entry("/tmp/evil.py")], [GOOD], "absolute"),
    "drive letter": ([_entry("C:/evil.py")], [GOOD], "absolute"),
    "backslash": ([_entry("pkg\\..\\evil.py")], [GOOD], "backslash"),
    "hidden": ([_entry(".evil/x.py")], [GOOD], "hidden"),
    "control character": ([_entry("evil\n.py")], [GOOD], "control"),
    "symbolic link": ([_entry("link.py", kind="symlink")], [GOOD], "regular files only"),
    "hard link": ([_entry("link.py", kind="hardlink")], [GOOD], "regular files only"),
    "absurd size": ([["big.py", bundles.sha256(b"x"), 10**12, "file"]], [], "bytes"),
    "negative size": ([["neg.py", bundles.sha256(b"x"), -1, "file"]], [], "byte count"),
    "absurd count": ([_entry(f"m{i}.py") for i in range(51)], [], "files"),
    "too large in all": ([_entry(f"m{i}.py", BIG) for i in range(4)], [BIG], "over"),
    "listed twice": ([_entry("a.py"), _entry("a.py")], [GOOD], "twice"),
    "differs only in case": ([_entry("a.py"), _entry("A.py")], [GOOD], "case"),
    "a file is a directory": ([_entry("a"), _entry("a/b.py")], [GOOD], "directory"),
    "bytes do not match the hash": (
        [_entry("x.py")],
        [(bundles.sha256(GOOD), GOOD.replace(b"ok", b"ko"))],
        "do not have that hash",
    ),
    "bytes of another size": ([_entry("x.py")], [(bundles.sha256(GOOD), GOOD + b"#")], "says"),
    "a file not in the manifest": ([_entry("x.py")], [GOOD, b"surprise"], "does not list"),
    "shadows the standard library": ([_entry("json.py")], [GOOD], "shadow"),
    "shadows offload": ([_entry("offload/__init__.py")], [GOOD], "shadow"),
    "takes an --app module's name": ([_entry("tests/evil.py")], [GOOD], "--app"),
    "does not import": ([_entry("broken.py", BAD)], [BAD], "SystemExit"),
    "serves nothing": ([_entry("plain.py", PLAIN)], [PLAIN], "no @offload"),
}


def _apps_tree(data: Path) -> list[Path]:
    return sorted((data / "apps").rglob("*")) if (data / "apps").exists() else []


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_a_hostile_bundle_is_refused_and_leaves_nothing_behind(hostile, case):
    client, data = hostile
    files, sends, says = HOSTILE[case]
    sent = [s if isinstance(s, tuple) else (bundles.sha256(s), s) for s in sends]
    before = _apps_tree(data)
    body: dict = {"op": "deploy", "app": "hostile", "files": files}
    if sent:
        body["send"] = [h for h, _ in sent]
    with pytest.raises(offload.DeployRefused, match=says):
        answer = _ask(client, body, [b for _, b in sent])
        pytest.fail(f"not refused: {answer}")
    after = _apps_tree(data)
    assert after == before
    assert not [p for p in after if ".staging-" in str(p)]
    from . import apps

    assert client.call(apps.add, (1, 2), {}, mode="remote") == 3  # and it serves on


def test_a_manifest_too_large_to_read_is_refused(hostile):
    client, data = hostile
    files = [_entry(f"m{i:06d}.py") for i in range(60_000)]  # over 4 MB of JSON
    with pytest.raises(offload.ProtocolError, match="bad control request"):
        _ask(client, {"op": "deploy", "app": "hostile", "files": files}, [])
    assert not (data / "apps").exists() or not list((data / "apps").iterdir())


def test_packing_refuses_links_and_leaves_out_caches(tmp_path):
    app = tmp_path / "app"
    (app / "__pycache__").mkdir(parents=True)
    (app / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"\0")
    (app / ".git").mkdir()
    (app / ".git" / "HEAD").write_text("ref")
    (app / "m.py").write_text("from offload import offload\n")
    packed = bundle.pack(app)
    assert [e.path for e in packed.files] == ["m.py"] and packed.app == "app"
    (app / "link.py").symlink_to(app / "m.py")
    with pytest.raises(offload.DeployRefused, match="symbolic link"):
        bundle.pack(app)


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("pkg/mod.py", True),
        ("pkg/data/table.csv", True),
        ("pkg-1.0.dist-info/METADATA", True),
        ("../x.py", False),
        ("a/./b.py", False),
        ("a//b.py", False),
        ("/etc/passwd", False),
        ("a/" * 40 + "x.py", False),
        ("x" * 300 + ".py", False),
    ],
)
def test_paths_a_bundle_may_hold(path, ok):
    if ok:
        assert bundles.check_path(path) == path
    else:
        with pytest.raises(offload.DeployRefused):
            bundles.check_path(path)


def test_modules_and_top_level_names_of_a_bundle():
    entries = [
        bundles.Entry(p, "0" * 64, 1)
        for p in (
            "pkg/__init__.py",
            "pkg/sub/mod.py",
            "pkg/data/x.csv",
            "single.py",
            "fast.cpython-311-x86_64-linux-gnu.so",
            "pkg-1.0.dist-info/RECORD",
        )
    ]
    assert bundles.modules(entries) == ["fast", "pkg", "pkg.sub.mod", "single"]
    assert bundles.top_level(entries) == ["fast", "pkg", "single"]


# -- provisioning on first use --------------------------------------------------------------------


def test_a_function_that_provisions_deploys_its_app_on_first_use(edge, tmp_path, monkeypatch):
    name = _unique("dprov")
    _module(
        tmp_path / "src",
        name,
        """
        from offload import offload


        @offload(provision=True)
        def halve(x):
            return x / 2


        @offload
        def plain(x):
            return x
        """,
    )
    module = _fresh(name, monkeypatch, tmp_path / "src")
    with edge.client() as client:
        client.ping(timeout=10)
        assert f"{name}:halve" not in client.servers.info["functions"]
        assert client.call(module.halve, (9,), {}, mode="remote") == 4.5
        remote = client.servers.require()
        listed = {a["app"]: a for a in deploy.apps(remote)}
        assert listed[name]["current"] == 1
        assert client.call(module.plain, (5,), {}, mode="remote") == 5  # deployed with it
        assert client.call(module.halve, (4,), {}, mode="remote") == 2.0  # no second deployment
        assert [v["version"] for v in deploy.apps(remote)[-1]["versions"]] == [1]
        totals = client.stats()[f"{name}:halve"]["remote"]
        # The deployment counts for the function like any transfer: its bytes went up.
        size = len((tmp_path / "src" / f"{name}.py").read_bytes())
        assert totals["calls"] == 2 and totals["bytes_up"] > size


def test_concurrent_first_calls_share_one_deployment_and_auto_mode_provisions_too(
    edge, tmp_path, monkeypatch
):
    name = _unique("dmany")
    _module(
        tmp_path / "src",
        name,
        """
        from offload import offload


        @offload(provision=True, mode="remote")
        def twice(x):
            return 2 * x
        """,
    )
    other = _unique("dauto")
    _module(
        tmp_path / "src",
        other,
        "from offload import offload\n\n\n@offload\ndef thrice(x):\n    return 3 * x\n",
    )
    module = _fresh(name, monkeypatch, tmp_path / "src")
    auto = _fresh(other, monkeypatch, tmp_path / "src")
    with edge.client() as client:
        client.ping(timeout=10)
        futures = [client.submit(module.twice, i) for i in range(6)]
        assert [f.result(timeout=60) for f in futures] == [2 * i for i in range(6)]
        listed = {a["app"]: a for a in deploy.apps(client.servers.require())}
        assert [v["version"] for v in listed[name]["versions"]] == [1]  # one deployment
    with edge.client(provision=True) as client:  # every function provisions; auto mode
        client.ping(timeout=10)
        assert client.call(auto.thrice, (3,), {}) == 9  # a new function goes there once
        assert client.stats()[f"{other}:thrice"]["remote"]["calls"] == 1
        assert other in {a["app"] for a in deploy.apps(client.servers.require())}


def test_an_app_name_that_is_not_a_name_is_refused(hostile):
    client, data = hostile
    before = _apps_tree(data)
    for name in ("../evil", "/abs", ".", "a/b", "x" * 101, 7):
        with pytest.raises(offload.DeployRefused, match="app name"):
            _ask(client, {"op": "deploy", "app": name, "files": [_entry("x.py")]}, [GOOD])
    assert _apps_tree(data) == before


def test_provisioning_refused_falls_back_here_in_auto_mode(edge, tmp_path, monkeypatch):
    name = _unique("dnoprov")
    _module(
        tmp_path / "src",
        name,
        "from offload import offload\n\n\n@offload(provision=True)\ndef neg(x):\n    return -x\n",
    )
    module = _fresh(name, monkeypatch, tmp_path / "src")
    with edge.client("bob") as client:  # authorized, not a deployer
        client.ping(timeout=10)
        with pytest.raises(offload.NotADeployer):
            client.call(module.neg, (1,), {}, mode="remote")
        with pytest.warns(RuntimeWarning, match="NotADeployer"):
            assert client.call(module.neg, (2,), {}) == -2  # auto: here, said once
    assert edge.tree() == []


def test_the_decision_counts_the_app_a_server_lacks():
    from offload.profiler import Profiler
    from offload.profiler.decision import AdaptiveDecider

    @offload.offload
    def work(x):
        return x

    decider = AdaptiveDecider(Profiler(profile_cache=""))
    decider.observe_local(work, 1000, 0.05)  # 50 ms here
    decider.profiler.link.on_probe(10**6, 0, 1.0)  # about 1 MB/s up
    side, _ = decider.decide(work, (b"x" * 1000,), {}, True, extra_up=10**6)
    assert side == "local"  # a second to send its app against 50 ms here
    side, _ = decider.decide(work, (b"x" * 1000,), {}, True)
    assert side == "remote"  # with the app there: never run there, so tried once
    decider.observe_transfer(work, 10**6, 200, 1.2, 0.2)
    assert decider.stats()[work.wire_name]["remote"]["bytes_up"] == 10**6
    assert json.dumps(decider.stats())  # plain numbers

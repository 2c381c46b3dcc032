"""Per-job cgroups on cgroup v2: the server's delegated subtree (``edge_server.pids``).

Raspberry Pi OS Bookworm has only v2. A server whose group was delegated
(systemd ``Delegate=yes``) moves itself into the leaf ``server/``, gives the
controllers to its children and puts each worker into ``edge-server-PID/wN``.
First on a fake tree (files in a temporary directory: what is written where),
then, as root where the kernel has a v2 hierarchy with a controller to give,
on the real one (the rule that only leaves hold processes is the kernel's).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_server import pids

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """A fake v2 hierarchy, the (non-root) server in a delegated service group."""
    root = tmp_path / "cgroup"
    service = root / "system.slice" / "edge-server.service"
    service.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    (service / "cgroup.controllers").write_text("memory pids\n")
    (service / "cgroup.subtree_control").write_text("\n")
    (service / "cgroup.procs").write_text("4242\n")
    me = tmp_path / "proc-self-cgroup"
    me.write_text("0::/system.slice/edge-server.service\n")
    monkeypatch.setattr(pids, "_ROOT", root)
    monkeypatch.setattr(pids, "_PROC_CGROUP", me)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(pids, "_delegated", lambda path: path == service)  # Delegate=yes
    pids.own_group.cache_clear()
    yield service, me
    pids.own_group.cache_clear()


def test_the_server_moves_into_a_leaf_and_gives_out_the_controller(tree):
    service, me = tree
    worker = pids.group(77, "w1")
    assert worker == service / "edge-server-77" / "w1"
    assert (service / "server" / "cgroup.procs").read_text() == "4242"  # out of the way
    assert (service / "cgroup.subtree_control").read_text() == "+pids"
    assert (service / "edge-server-77" / "cgroup.subtree_control").read_text() == "+pids"
    pids.adopt(worker, 4343)
    assert (worker / "cgroup.procs").read_text() == "4343"
    # from its leaf the server still finds its group (it already gives out pids)
    me.write_text("0::/system.slice/edge-server.service/server\n")
    (service / "cgroup.subtree_control").write_text("memory pids\n")
    assert pids.group(77, "w2") == service / "edge-server-77" / "w2"
    assert pids.group(77, "w2", "memory") == service / "edge-server-77" / "w2"


def test_the_worker_sets_pids_max_and_memory_max_in_its_group(tree):
    service, me = tree
    worker = service / "edge-server-77" / "w1"
    worker.mkdir(parents=True)
    (worker / "cgroup.controllers").write_text("memory pids\n")
    (worker / "cgroup.procs").write_text(f"{os.getpid()}\n")
    (worker / "memory.current").write_text("1000\n")
    (worker / "memory.max").write_text("max\n")
    (worker / "pids.events").write_text("max 3\n")
    me.write_text("0::/system.slice/edge-server.service/edge-server-77/w1\n")
    assert pids.own_group() == worker
    pids.cap(5)
    tasks = len(os.listdir("/proc/self/task"))
    assert (worker / "pids.max").read_text() == str(tasks + 5)
    assert pids.cap_memory(4096)
    assert (worker / "memory.max").read_text() == "5096"
    assert (worker / "memory.swap.max").read_text() == "0"
    assert pids.refusals() == 3


def test_a_server_leaves_a_group_it_was_not_given_alone(tree, monkeypatch):
    service, _ = tree
    monkeypatch.setattr(pids, "_delegated", lambda path: False)  # e.g. a terminal's scope
    assert pids.group(77, "w1") is None
    assert not (service / "server").exists()
    assert (service / "cgroup.subtree_control").read_text() == "\n"


def _real_v2() -> tuple[Path, str] | None:
    """A v2 hierarchy with a controller the root group gives out, as root; else None."""
    if os.geteuid() != 0:
        return None
    for unified in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        control = unified / "cgroup.subtree_control"
        if control.exists():
            given = control.read_text().split()
            for controller in ("pids", "memory", *given):
                if controller in given:
                    return unified, controller
    return None


SCRIPT = """
import json, os, subprocess, sys
from pathlib import Path
from edge_server import pids
group, controller = Path(sys.argv[1]), sys.argv[2]
(group / "cgroup.procs").write_text(str(os.getpid()))
path = pids.group(os.getpid(), "w1", controller)
child = subprocess.Popen([sys.executable, "-c", "import sys; from edge_server import pids;"
    f"sys.stdin.readline(); print(pids.own_group({controller!r}), flush=True); sys.stdin.read()"],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
pids.adopt(path, child.pid)
child.stdin.write("go\\n"); child.stdin.flush()
seen = {
    "path": str(path),
    "server": Path("/proc/self/cgroup").read_text(),
    "worker": Path(f"/proc/{child.pid}/cgroup").read_text(),
    "worker_sees": child.stdout.readline().strip(),
    "given": (group / "cgroup.subtree_control").read_text().split(),
    "mine_gives": (path.parent / "cgroup.subtree_control").read_text().split(),
    "leaf_has": (path / "cgroup.controllers").read_text().split(),
}
if controller == "pids":
    (path / "pids.max").write_text("7")
    seen["pids.max"] = (path / "pids.max").read_text().strip()
pids.release(path)
child.wait(timeout=10)
seen["child_gone"] = not Path(f"/proc/{child.pid}").exists()
pids.release_server(os.getpid(), controller)
seen["left"] = path.parent.exists()
print(json.dumps(seen))
"""


@pytest.mark.skipif(_real_v2() is None, reason="needs root and a v2 controller to give out")
def test_on_the_kernels_own_v2_hierarchy():
    found = _real_v2()
    assert found is not None
    unified, controller = found
    group = unified / f"offload-test-{os.getpid()}"
    group.mkdir()
    try:
        os.setxattr(group, "trusted.delegate", b"1")  # as systemd marks a Delegate=yes unit
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(group), controller],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        seen = json.loads(done.stdout)
        rel = "/" + str(group.relative_to(unified))
        server = seen["server"].splitlines()[-1]
        assert server.startswith("0::") and server.endswith(f"{rel}/server")
        worker = seen["worker"].splitlines()[-1]
        assert worker.endswith(f"{rel}/edge-server-{Path(seen['path']).parent.name[12:]}/w1")
        assert seen["worker_sees"] == seen["path"]
        assert controller in seen["given"] and controller in seen["mine_gives"]
        assert controller in seen["leaf_has"]
        assert seen.get("pids.max", "7") == "7"
        assert seen["child_gone"]  # killed (and reaped) by release
        assert seen["left"] is False
    finally:
        for _ in range(50):
            try:
                (group / "server").rmdir()
                group.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)

#!/usr/bin/env bash
# Does offload install and run on a 64-bit Raspberry Pi? Checked here, without a Pi:
#   1. pip downloads the runtime dependencies (pyproject.toml's base list) as aarch64 wheels,
#      binary only, for CPython 3.11, and builds the project's own wheel;
#   2. Debian's qemu-user-static and Debian's arm64 python3.11 packages are unpacked into
#      WORK (apt-get download + dpkg-deb -x: nothing is installed on this machine);
#   3. under qemu-aarch64-static, an arm64 Python with only those wheels imports offload and
#      edge_server, makes CURVE key pairs and runs a call on a local edge server (its own
#      worker processes, CurveZMQ on, the same keys a Pi would use).
# Run as root (dpkg --add-architecture arm64, apt-get update) on a Debian/Ubuntu amd64 host.
# Slow (minutes; qemu emulates every instruction): not part of the test suite.
# Usage: deploy/check-arm64.sh [WORK_DIR]   (default: /tmp/offload-arm64; reused when run again)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-${TMPDIR:-/tmp}/offload-arm64}
PY=3.11
HOST_PYTHON=${HOST_PYTHON:-python3}
mkdir -p "$WORK"/{debs,qemu,sysroot,wheels,site,run}
WORK=$(cd "$WORK" && pwd)
STARTED=$SECONDS
step() { printf '\n== %s (at %d s)\n' "$*" $((SECONDS - STARTED)); }

step "runtime dependencies from pyproject.toml"
mapfile -t DEPS < <("$HOST_PYTHON" - "$ROOT/pyproject.toml" "$PY" <<'EOF'
import sys, tomllib
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
target = {"python_version": sys.argv[2], "python_full_version": sys.argv[2] + ".0",
          "platform_machine": "aarch64", "sys_platform": "linux", "os_name": "posix",
          "platform_system": "Linux", "implementation_name": "cpython",
          "platform_python_implementation": "CPython"}
with open(sys.argv[1], "rb") as f:
    for dep in tomllib.load(f)["project"]["dependencies"]:
        req = Requirement(dep)
        if req.marker is None or req.marker.evaluate(target):
            req.marker = None
            print(req)
EOF
)
printf '   %s\n' "${DEPS[@]}"

step "aarch64 wheels (pip download --only-binary=:all:) and the project's wheel"
PLATFORMS=(manylinux_2_36_aarch64 manylinux_2_34_aarch64 manylinux_2_28_aarch64
           manylinux_2_17_aarch64 manylinux2014_aarch64)
"$HOST_PYTHON" -m pip download --quiet --only-binary=:all: --python-version "$PY" \
    --implementation cp --abi "cp${PY/./}" --abi abi3 --abi none \
    "${PLATFORMS[@]/#/--platform=}" -d "$WORK/wheels" "${DEPS[@]}"
rm -f "$WORK"/wheels/offload-*.whl
"$HOST_PYTHON" -m pip wheel --quiet --no-deps -w "$WORK/wheels" "$ROOT"
ls -1 "$WORK/wheels"
rm -rf "$WORK/site" && mkdir -p "$WORK/site"
"$HOST_PYTHON" -m pip install --quiet --no-deps --no-index --target "$WORK/site" \
    --only-binary=:all: --python-version "$PY" --implementation cp --abi "cp${PY/./}" \
    "${PLATFORMS[@]/#/--platform=}" "$WORK"/wheels/*.whl

step "qemu-aarch64-static and an arm64 python$PY from Debian's packages"
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
fi
apt-get update -qq
cd "$WORK/debs"
QEMU=$(command -v qemu-aarch64-static || true)
if [ -z "$QEMU" ]; then
    [ -x "$WORK/qemu/usr/bin/qemu-aarch64-static" ] || {
        apt-get download -qq -o APT::Sandbox::User=root qemu-user-static
        dpkg-deb -x qemu-user-static_*.deb "$WORK/qemu"
    }
    QEMU=$WORK/qemu/usr/bin/qemu-aarch64-static
fi
if [ ! -x "$WORK/sysroot/usr/bin/python$PY" ]; then
    # python3.11 and everything it depends on, arm64 only (no recommends), and the C++
    # runtime numpy's wheel links to (manylinux takes it from the system; a Pi has it)
    mapfile -t PKGS < <(apt-cache depends --recurse --no-recommends --no-suggests \
        --no-conflicts --no-breaks --no-replaces --no-enhances "python$PY:arm64" \
        libstdc++6:arm64 \
        | grep -E '^[a-z0-9][^ ]*:arm64$' | sort -u)
    echo "   ${#PKGS[@]} arm64 packages"
    apt-get download -qq -o APT::Sandbox::User=root "${PKGS[@]}"
    for deb in ./*_arm64.deb; do dpkg-deb -x "$deb" "$WORK/sysroot"; done
fi
SYSROOT=$WORK/sysroot
"$QEMU" --version | head -1
file -L "$SYSROOT/usr/bin/python$PY" 2>/dev/null | cut -d, -f1-2 || true

# Child processes (the edge server, its spawned workers) exec sys.executable; without
# binfmt_misc the host kernel cannot run an aarch64 binary, so sys.executable is a host
# script that runs the arm64 Python under qemu again (sitecustomize sets it).
cat > "$WORK/run/python$PY" <<EOF
#!/bin/sh
exec "$QEMU" -L "$SYSROOT" "$SYSROOT/usr/bin/python$PY" "\$@"
EOF
chmod +x "$WORK/run/python$PY"
cat > "$WORK/run/sitecustomize.py" <<'EOF'
import os, sys
if os.environ.get("ARM64_PYTHON"):
    sys.executable = os.environ["ARM64_PYTHON"]
EOF
cat > "$WORK/run/arm64_smoke_app.py" <<'EOF'
import os, platform
import numpy as np
from offload import offload

@offload
def where_and_matmul(n):
    a = np.arange(n * n, dtype=np.int64).reshape(n, n)
    return platform.machine(), os.getpid(), int((a @ a).sum())
EOF
cat > "$WORK/run/smoke.py" <<'EOF'
import os, platform, sys, tempfile, time
t0 = time.monotonic()
import numpy as np, zmq, psutil, lz4.frame, cloudpickle
import offload, edge_server
from offload import Client, serve_local
from offload.cli import main as offload_cli
print(f"python {platform.python_version()} on {platform.machine()}; pyzmq {zmq.__version__} "
      f"(libzmq {zmq.zmq_version()}, CURVE {zmq.has('curve')}), numpy {np.__version__}, "
      f"psutil {psutil.__version__}, lz4 {lz4.__version__}, cloudpickle {cloudpickle.__version__}")
print(f"imports: {time.monotonic() - t0:.1f} s")
assert platform.machine() == "aarch64", platform.machine()
keys = tempfile.mkdtemp()
t = time.monotonic()
assert offload_cli(["keys", "generate", "server", "--dir", keys]) == 0
assert offload_cli(["keys", "generate", "alice", "--dir", f"{keys}/allowed"]) == 0
print(f"CURVE key pairs: {time.monotonic() - t:.1f} s")
t = time.monotonic()
server = serve_local(["arm64_smoke_app"], workers=1, start_timeout=600, extra_args=[
    "--secret-key", f"{keys}/server.key_secret", "--authorized-keys", f"{keys}/allowed"])
print(f"edge server up at {server.address}: {time.monotonic() - t:.1f} s")
from arm64_smoke_app import where_and_matmul
expected = int((np.arange(64 * 64).reshape(64, 64) @ np.arange(64 * 64).reshape(64, 64)).sum())
try:
    with Client(server.address, server_key=f"{keys}/server.key",
                client_key=f"{keys}/allowed/alice.key_secret", timeout=600,
                connect_timeout=120, heartbeat_timeout=300, profile_cache="") as client:
        for i in range(2):
            t = time.monotonic()
            machine, pid, total = client.call(where_and_matmul, (64,), {}, mode="remote")
            print(f"served call {i + 1}: ran on {machine} in worker {pid}: "
                  f"{time.monotonic() - t:.1f} s")
            assert machine == "aarch64" and pid != os.getpid() and total == expected
finally:
    server.stop()
print(f"SMOKE TEST PASSED in {time.monotonic() - t0:.1f} s")
EOF

step "smoke test under qemu-aarch64-static"
cd "$WORK/run"
env -i PATH="$WORK/run:/usr/bin:/bin" HOME="$WORK/run" LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 PYTHONPATH="$WORK/run:$WORK/site" ARM64_PYTHON="$WORK/run/python$PY" \
    "$WORK/run/python$PY" smoke.py
step "done"

"""TLS between a site's machines (Dask's security configuration), on loopback.

A CA, and one certificate it signed that the scheduler, the edge server and
the lender present; the scheduler listens on ``tls://`` only. A job runs
over it, and a Dask client without a certificate cannot join.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("distributed")

import offload
from tests import site_apps
from tests.test_site import _env, _free_port, _stop, _wait_port

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl")


def _certificates(directory: Path) -> tuple[str, str, str]:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=site-ca",
        "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "site.key", "-out", "site.csr")  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "site.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "site.pem")  # fmt: skip
    return str(directory / "ca.pem"), str(directory / "site.pem"), str(directory / "site.key")


def test_a_job_runs_over_tls_links_and_a_machine_without_a_certificate_is_refused(
    tmp_path: Path,
) -> None:
    ca, cert, key = _certificates(tmp_path)
    port = _free_port()
    scheduler = f"tls://127.0.0.1:{port}"
    log = open(tmp_path / "scheduler.log", "wb")  # noqa: SIM115
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--protocol",
                "tls",
                "--no-dashboard",
                "--tls-ca-file",
                ca,
                "--tls-cert",
                cert,
                "--tls-key",
                key,
            ],
            stdout=log,
            stderr=log,
            env=_env(),
            start_new_session=True,
        )
    ]
    server = None
    try:
        _wait_port(port)
        server = offload.serve_local(
            ["tests.site_apps"],
            data_dir=str(tmp_path / "data"),
            extra_args=["--engine", "dask", "--scheduler", scheduler, "--site-tls-ca", ca,
                        "--site-tls-cert", cert, "--site-tls-key", key, "--log-level", "WARNING"],
        )  # fmt: skip
        lender_log = open(tmp_path / "lender.log", "wb")  # noqa: SIM115
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from offload.cli import main; raise SystemExit(main())",
                    "lend",
                    "--server",
                    server.address,
                    "--cores",
                    "1",
                    "--host",
                    "tls-lender",
                    "--local-directory",
                    str(tmp_path / "lender"),
                    "--tls-ca",
                    ca,
                    "--tls-cert",
                    cert,
                    "--tls-key",
                    key,
                ],
                stdout=lender_log,
                stderr=lender_log,
                env=_env(),
                start_new_session=True,
            )
        )
        with offload.Client(server.address, mode="remote", heartbeat_timeout=20) as client:
            assert client.submit(site_apps.add, 20, 22).result(timeout=60) == 42
            assert client.server.resources()[0]["online"]
        from distributed import Client

        with pytest.raises(Exception):  # noqa: B017 (how it fails varies: TLS or timeout)
            Client(scheduler, timeout=2)  # no certificate: refused
        with pytest.raises(Exception):  # noqa: B017
            Client(f"tcp://127.0.0.1:{port}", timeout=2)  # plain TCP: no such listener
    finally:
        if server is not None:
            server.stop()
        for process in reversed(processes):  # the lender first: no graceful retirement
            _stop(process, signal.SIGKILL if process is not processes[0] else signal.SIGTERM)
    assert "tls://" in (tmp_path / "lender.log").read_text()

"""`cnnkit serve` against hostile clients (issue 26), over real sockets on loopback: a body that hides its size
(Content-Length plus Transfer-Encoding: chunked), slow clients, a foreign Host header, Starlette's own errors,
an RGBA upload that would decode to gigabytes, and a run whose model cannot run at all."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from PIL import Image

from cnnkit.errors import CheckpointError
from cnnkit.serve import ServeLimits, create_app, load_handler
from cnnkit.serve.app import server_config
from cnnkit.serve.limits import loopback_hosts
from test_export import make_run
from test_hardening_files import PEAK_RSS, _png
from test_serve import shoe_like

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def serving(app, limits: ServeLimits):
    """`app` on 127.0.0.1 with the protocol and limits `cnnkit serve` uses; yields the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(server_config(app, limits, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def handler(tmp_path_factory):
    return load_handler(make_run(tmp_path_factory.mktemp("hardening-serve")), backend="torch")


@pytest.fixture(scope="module")
def port(handler):
    limits = ServeLimits(read_timeout_s=1.0)
    with serving(create_app(handler, limits, allowed_hosts=loopback_hosts()), limits) as port:
        yield port


def raw(port: int, data: bytes, read_for: float = 5.0) -> bytes:
    """Send `data` on a fresh connection; what the server answers until it closes (or `read_for` seconds)."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_for) as connection:
        try:
            connection.sendall(data)
        except OSError:  # the server may close before everything is sent: its answer is what counts
            pass
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := connection.recv(65536):
                answer += chunk
    return answer


def envelope(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.JSONDecoder().raw_decode(body.decode())[0]


def test_content_length_plus_chunked_is_refused_unread(port):
    body = b"0" * (64 * 2**20)  # would be 64 MiB; the server must answer before reading it
    head = (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\n\r\n")
    started = time.monotonic()
    status, error = envelope(raw(port, head + f"{len(body):x}\r\n".encode() + body[:2**20]))
    assert (status, error["error"]) == (400, "bad_request") and "RFC 9112" in error["detail"]
    assert time.monotonic() - started < 5
    # Chunked alone (no Content-Length) is refused too, and a lying chunked stream is cut at the limit.
    status, error = envelope(raw(port, head.replace(b"Content-Length: 100\r\n", b"") + b"10\r\n" + b"0" * 16 + b"\r\n"))
    assert (status, error["error"]) == (411, "length_required")


def test_body_limit_counts_the_bytes_read(handler):
    limits = ServeLimits(max_body_bytes=1000)
    with serving(create_app(handler, limits), limits) as port:
        # Content-Length says 900; the client sends more in one go: the server reads at most 900 (h11 stops
        # there) and the multipart body is incomplete -> a clean 400, never a 200 on 10 MB.
        answer = raw(port, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 900\r\n"
                           b"Content-Type: multipart/form-data; boundary=x\r\n\r\n" + b"1" * 10_000_000)
        status, error = envelope(answer)
        assert status in (400, 422) and error["status"] == status and "Traceback" not in answer.decode(errors="replace")


def test_slow_clients_are_dropped(port):
    for request in (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n",  # headers never finished
                    b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\nabc"):  # body stalls
        started = time.monotonic()
        answer = raw(port, request, read_for=10)
        seconds = time.monotonic() - started
        assert 0.8 < seconds < 5, f"held for {seconds:.1f} s"
        if answer:  # a stalled body gets a 408 before the connection closes
            assert envelope(answer)[:1] == (408,)
    assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200


def test_host_header_docs_and_starlette_errors(port):
    url = f"http://127.0.0.1:{port}"
    refused = httpx.get(f"{url}/healthz", headers={"Host": "attacker.example"})
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_host"
    assert httpx.get(f"{url}/healthz", headers={"Host": "localhost"}).status_code == 200
    missing = httpx.get(f"{url}/docs")
    assert missing.status_code == 404 and missing.json() == {"error": "not_found", "status": 404, "detail": "Not Found"}
    assert httpx.get(f"{url}/openapi.json").status_code == 200
    wrong = httpx.put(f"{url}/predict", content=b"x")
    assert wrong.status_code == 405 and wrong.json()["error"] == "method_not_allowed"
    broken = httpx.post(f"{url}/predict", content=b"--x\r\nnot a part", headers={
        "Content-Type": "multipart/form-data; boundary=x"})
    assert broken.status_code in (400, 422) and set(broken.json()) == {"error", "status", "detail"}


def test_rgba_uploads_are_capped_and_reduced_in_bounded_memory(tmp_path):
    big = _png(tmp_path / "big.png", 7000, 7000, "RGBA")  # 49 MP, the 190 kB upload of the issue
    fits = _png(tmp_path / "fits.png", 4096, 4096, "RGBA")  # 16.8 MP: accepted, reduced before conversion
    run = make_run(tmp_path / "run")
    script = textwrap.dedent(PEAK_RSS) + textwrap.dedent(f"""
        from pathlib import Path
        from cnnkit.serve import ServeLimits, load_handler
        from cnnkit.serve.app import _job
        from cnnkit.serve.limits import ServeError
        handler, limits = load_handler({str(run)!r}, backend="torch"), ServeLimits()
        baseline()
        results = {{}}
        for name in ("big", "fits"):
            try:
                results[name] = _job(handler, limits, Path({str(tmp_path)!r}, name + ".png").read_bytes(), 1, False)["image"]
            except ServeError as error:
                results[name] = [error.status, str(error)]
        results["growth_mib"] = peak() - base_rss
        print(json.dumps(results))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"\nRGBA uploads: {big.stat().st_size:,} bytes (49 MP) refused, {fits.stat().st_size:,} bytes (16.8 MP) "
          f"served; peak RSS growth {results['growth_mib']:.0f} MiB")
    assert results["big"][0] == 413 and "decoded at full size" in results["big"][1]
    assert results["fits"]["width"] == 4096
    assert results["growth_mib"] < 200, results  # 4096 x 4096 RGBA is 64 MiB decoded; converted in full, ~400 MiB


def test_a_model_that_cannot_run_is_refused_before_serving(tmp_path):
    from safetensors.torch import load_file, save_file

    from cnnkit.engine.checkpoint import read_record

    run = make_run(tmp_path)
    record = read_record(run / "best.safetensors")
    record["preprocessing"] = {**record["preprocessing"], "channels": 3, "mean": [0.5] * 3, "std": [0.5] * 3}
    save_file(load_file(run / "best.safetensors"), str(run / "best.safetensors"), metadata={"cnnkit": json.dumps(record)})
    with pytest.raises(CheckpointError, match="the model fails on a blank 3 x 28 x 28 image"):
        load_handler(run, backend="torch")


def test_a_file_of_a_supported_format_that_cannot_be_read_is_422_not_415():
    """A TIFF Pillow cannot open was refused as 'not an image in a supported format (..., TIFF, ...)' (issue 24)."""
    from cnnkit.serve.limits import UnreadableImage, UnsupportedImage, open_image

    with pytest.raises(UnreadableImage, match="starts like a TIFF file") as unreadable:
        open_image(b"II*\x00" + bytes(40), 10**6)
    assert unreadable.value.status == 422
    with pytest.raises(UnsupportedImage) as unsupported:
        open_image(b"%!PS-Adobe-3.0 EPSF", 10**6)
    assert unsupported.value.status == 415


def test_a_non_finite_answer_for_one_image_is_an_error_not_null():
    """serve answered "probability": null when the model gave NaN for an input (issue 26 item 4)."""
    import torch
    from PIL import Image

    from cnnkit.serve.handlers import ClassificationHandler, ModelOutputError

    class NaNClassifier:
        classes = ["a", "b"]
        preprocessing = type("P", (), {"channels": 1, "image_size": (4, 4)})()

        def predict_proba(self, batch):
            return torch.tensor([[float("nan"), 0.5]])

    handler = ClassificationHandler(NaNClassifier(), None, "run", "torch")
    with pytest.raises(ModelOutputError, match="not finite") as error:
        handler.predict(Image.new("L", (4, 4)), top_k=2, explain=False)
    assert error.value.status == 500

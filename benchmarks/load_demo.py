"""Load test of the web demo: N concurrent gradio_client clients x M requests each.

    python benchmarks/load_demo.py --run runs/flowers                      # 8 x 50 /predict
    python benchmarks/load_demo.py --run runs/flowers --clients 1 --endpoint explain
    python benchmarks/load_demo.py --url http://127.0.0.1:7860 --images photos/
    python benchmarks/load_demo.py --run runs/flowers --compare   # batched vs unbatched

Starts the demo in its own process on a free 127.0.0.1 port (or uses --url), sends each
client's requests one after the other (every request uploads its image, as a real client
does), and prints, per endpoint: requests, errors, latency p50 / p95 / max,
throughput and, when it started the server, the server's CPU time per request (a cost
that other processes competing for the CPU do not inflate). One untimed request per endpoint first, so graph tracing is not counted.
Images: the run's test split (splits.csv + the data folder), else --images.

--compare starts the demo twice, unbatched (`--max-batch 1`: every /predict its own
forward pass) and batched (the default), and measures both in one run: /predict with
--clients x --requests, then /explain (Grad-CAM) with one client; then the ratios
(goal: 0 errors, /predict throughput at least 2x unbatched, p95 no worse, /explain
no slower).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", help="run directory (or export) to serve")
    p.add_argument("--url", help="benchmark a demo already running at this URL instead")
    p.add_argument("--images", help="folder of images to send (default: the run's test "
                                    "split)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument("--requests", type=int, default=50,
                   help="requests per client and endpoint (default 50)")
    p.add_argument("--endpoint", choices=("predict", "explain", "both"), default="predict")
    p.add_argument("--method", default="gradcam", help="/explain method (default gradcam)")
    p.add_argument("--max-batch", type=int,
                   help="the served demo's --max-batch (default: the demo's own)")
    p.add_argument("--compare", action="store_true",
                   help="unbatched vs batched demo, both in this run (needs --run)")
    p.add_argument("--client", choices=("gradio", "http"), default="gradio",
                   help="gradio_client (default), or plain HTTP calls of Gradio's REST API "
                        "(lighter: leaves the CPU to the server)")
    p.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = p.parse_args(argv)
    if not args.run and not args.url:
        p.error("give --run (a run directory to serve) or --url (a running demo)")
    if args.url and not args.images:
        p.error("--url needs --images (the run's test split is not known)")
    if args.compare and args.url:
        p.error("--compare starts its own servers: give --run, not --url")
    return args


def find_images(args: argparse.Namespace, limit: int = 200) -> list[str]:
    if args.images:
        paths = sorted(str(p) for p in Path(args.images).rglob("*")
                       if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        from transferkit.run import load_run

        paths = [str(p) for p in load_run(args.run).test_samples(limit)]
    if not paths:
        sys.exit("no images found: pass --images FOLDER")
    return paths[:limit]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: str, max_batch: int | None = None) -> tuple[subprocess.Popen, str]:
    """The demo in a child process (as deployed), and its URL once it answers."""
    import urllib.request

    port = free_port()
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root), TF_CPP_MIN_LOG_LEVEL="2",
               GRADIO_ANALYTICS_ENABLED="False")
    extra = [] if max_batch is None else ["--max-batch", str(max_batch)]
    server = subprocess.Popen([sys.executable, "-m", "transferkit", "serve", run, "--port",
                               str(port), *extra], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 300
    while time.time() < deadline:
        if server.poll() is not None:
            sys.exit(f"the demo exited ({server.returncode}):\n{server.stderr.read()}")
        try:
            with urllib.request.urlopen(url + "config", timeout=2):
                return server, url
        except OSError:
            time.sleep(0.5)
    server.kill()
    sys.exit("the demo did not start within 300 s")


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) a process has used so far (Linux), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class HttpClient:
    """Gradio's REST API by hand (upload, call, read the event stream): what any HTTP
    client does, at a fraction of `gradio_client`'s own CPU per request (which, on a
    2-core machine, would otherwise be what limits the throughput measured)."""

    def __init__(self, url: str):
        import httpx

        self.url = url.rstrip("/") + "/gradio_api"
        self.http = httpx.Client(timeout=120)

    def predict(self, *data, api_name: str):
        args = []
        for value in data:
            if isinstance(value, Path):  # a file: uploaded first, as the browser does
                with open(value, "rb") as f:
                    r = self.http.post(f"{self.url}/upload",
                                       files={"files": (value.name, f)})
                r.raise_for_status()
                value = {"path": r.json()[0], "meta": {"_type": "gradio.FileData"}}
            args.append(value)
        name = api_name.strip("/")
        r = self.http.post(f"{self.url}/call/{name}", json={"data": args})
        r.raise_for_status()
        event = r.json()["event_id"]
        kind = None
        with self.http.stream("GET", f"{self.url}/call/{name}/{event}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    kind = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and kind in ("complete", "error"):
                    payload = line.split(":", 1)[1].strip()
                    if kind == "error":
                        raise RuntimeError(f"the demo answered an error: {payload}")
                    return json.loads(payload)
        raise RuntimeError(f"no answer to {name} (last event {kind!r})")

    def close(self) -> None:
        self.http.close()


def call(client, endpoint: str, image: str, method: str):
    if isinstance(client, HttpClient):
        if endpoint == "predict":
            return client.predict(Path(image), api_name="/predict")
        return client.predict(Path(image), method, "", api_name="/explain")
    from gradio_client import handle_file

    if endpoint == "predict":
        return client.predict(handle_file(image), api_name="/predict")
    return client.predict(handle_file(image), method, "", api_name="/explain")


def run_load(url: str, endpoint: str, images: list[str], clients: int, requests: int,
             method: str, server_pid: int | None = None, kind: str = "gradio") -> dict:
    if kind == "http":
        pool = [HttpClient(url) for _ in range(clients)]
    else:
        from gradio_client import Client

        pool = [Client(url, verbose=False) for _ in range(clients)]
    call(pool[0], endpoint, images[0], method)  # warm-up, untimed
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[list[str]] = [[] for _ in range(clients)]
    start = threading.Barrier(clients + 1)

    def worker(i: int) -> None:
        start.wait()
        for r in range(requests):
            image = images[(i * requests + r) % len(images)]
            t = time.perf_counter()
            try:
                call(pool[i], endpoint, image, method)
                latencies[i].append(time.perf_counter() - t)
            except Exception as e:  # noqa: BLE001  every failure counts as an error
                errors[i].append(f"{type(e).__name__}: {e}"[:200])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    cpu0 = cpu_seconds(server_pid) if server_pid else None
    start.wait()
    t0, client0 = time.perf_counter(), time.process_time()
    for t in threads:
        t.join()
    wall, client1 = time.perf_counter() - t0, time.process_time()
    cpu1 = cpu_seconds(server_pid) if server_pid else None
    for client in pool:
        client.close()
    ms = np.array([x for row in latencies for x in row]) * 1000
    failed = [e for row in errors for e in row]
    return {
        "endpoint": f"/{endpoint}" + (f" ({method})" if endpoint == "explain" else ""),
        "clients": clients, "requests": clients * requests, "errors": len(failed),
        "p50_ms": float(np.percentile(ms, 50)) if ms.size else None,
        "p95_ms": float(np.percentile(ms, 95)) if ms.size else None,
        "max_ms": float(ms.max()) if ms.size else None,
        "throughput_rps": len(ms) / wall, "wall_s": wall,
        # Contention-free cost: the server's CPU time per request (all threads).
        "server_cpu_ms_per_request": (cpu1 - cpu0) * 1000 / (clients * requests)
        if cpu0 is not None and cpu1 is not None else None,
        # The clients' own CPU (this process): on a 2-core machine the clients and
        # the server share the cores, and a client that costs more than the server
        # caps the throughput whatever the server does.
        "client_cpu_ms_per_request": (client1 - client0) * 1000 / (clients * requests),
        "first_errors": sorted(set(failed))[:3],
    }


def report(r: dict, requests: int, label: str = "") -> None:
    fmt = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
    print(f"{label}{r['endpoint']:<20} {r['clients']} clients x {requests}: "
          f"{r['requests']} requests, {r['errors']} errors | latency p50 "
          f"{fmt(r['p50_ms'])} ms, p95 {fmt(r['p95_ms'])} ms, max "
          f"{fmt(r['max_ms'])} ms | {r['throughput_rps']:.1f} req/s "
          f"({r['wall_s']:.1f} s)" + (
              f" | server CPU {r['server_cpu_ms_per_request']:.0f} ms/request"
              if r["server_cpu_ms_per_request"] is not None else "")
          + f", clients' CPU {r['client_cpu_ms_per_request']:.0f} ms/request", flush=True)
    for e in r["first_errors"]:
        print(f"    error: {e}")


def stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def compare(args: argparse.Namespace, images: list[str]) -> list[dict]:
    """Unbatched, then batched: /predict under load and single-client /explain each."""
    results = []
    for mode, max_batch in (("unbatched", 1), ("batched", args.max_batch)):
        server, url = start_server(args.run, max_batch)
        try:
            for endpoint, clients in (("predict", args.clients), ("explain", 1)):
                r = run_load(url, endpoint, images, clients, args.requests, args.method,
                             server.pid, args.client)
                r["mode"] = mode
                report(r, args.requests, f"{mode:<10} ")
                results.append(r)
        finally:
            stop(server)
    (pu, eu), (pb, eb) = results[:2], results[2:]
    print(f"/predict batched vs unbatched: throughput x{pb['throughput_rps'] / pu['throughput_rps']:.2f}"
          f" (goal >= 2), p95 x{pb['p95_ms'] / pu['p95_ms']:.2f} (goal <= 1), server CPU "
          f"per request x{pb['server_cpu_ms_per_request'] / pu['server_cpu_ms_per_request']:.2f}"
          f"; /explain p95 {eu['p95_ms']:.0f} -> {eb['p95_ms']:.0f} ms", flush=True)
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    images = find_images(args)
    if args.compare:
        results = compare(args, images)
    else:
        server, url = (None, args.url) if args.url else start_server(args.run,
                                                                      args.max_batch)
        try:
            endpoints = ("predict", "explain") if args.endpoint == "both" \
                else (args.endpoint,)
            results = []
            for endpoint in endpoints:
                r = run_load(url, endpoint, images, args.clients, args.requests,
                             args.method, server.pid if server is not None else None,
                             args.client)
                results.append(r)
                report(r, args.requests)
        finally:
            if server is not None:
                stop(server)
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

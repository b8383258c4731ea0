"""samtune-serve's latency and throughput next to calling ``SAM2ImagePredictor`` in-process.

The server is the real ``samtune-serve`` command, started as a subprocess on a free
127.0.0.1 port; the in-process baseline is sam2's own ``SAM2ImagePredictor`` on the same
weights (random init: timings do not depend on the values), with the same number of torch
threads. Rows:

- segment on a cached embedding: in-process ``predict`` vs ``POST /sam2/segment_image`` by
  ``image_id`` (RLE and polygon answers), and through ``inference-sdk`` (which resends the image;
  the server decodes and hashes it, then hits the cache);
- embed + segment: in-process ``set_image`` + ``predict`` vs one segment request with an image
  the server has not seen;
- throughput with 1, 4 and 16 concurrent clients segmenting on cached embeddings.

Every loop is bounded in count and in time. Prints a Markdown table and writes JSON::

    python scripts/bench_serving.py --image-size 256 --out docs/benchmarks/serving-cpu-256px.json
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from samtune.data.datasets.demo import NUCLEI_MINI  # noqa: E402
from samtune.data.datasets.synthetic import SyntheticDataset  # noqa: E402
from samtune.evaluation.report.render import Heading, Paragraph, Table, to_markdown  # noqa: E402
from samtune.inference.predictor import fit_feature_sizes  # noqa: E402
from samtune.models import build_sam2_model  # noqa: E402

DEFAULT_IMAGE = (
    NUCLEI_MINI / "images" / "2c83c86dd4e5dacc024b55629375567fb8e320a82ef86f541cfe54764040fc25.png"
)
VERSION_IDS = {
    "sam2.1_hiera_tiny": "hiera_tiny",
    "sam2.1_hiera_small": "hiera_small",
    "sam2.1_hiera_base_plus": "hiera_b_plus",
    "sam2.1_hiera_large": "hiera_large",
}


def percentiles(times: list[float]) -> dict[str, float]:
    """p50, p95 and the count of ``times`` (seconds), in milliseconds."""
    ms = np.asarray(times) * 1000.0
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "n": len(times),
    }


def interleaved(calls: dict[str, Any], *, repeats: int, max_s: float, warmup: int = 2):
    """Time each call of ``calls`` in turn, round after round, so that all see the same load.

    A call may return its own duration (to leave client-side preparation out); otherwise the
    wall time of the call is taken. At most ``repeats`` rounds or ``max_s`` seconds.
    """
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    stop = time.monotonic() + max_s
    for _ in range(repeats):
        if time.monotonic() > stop:
            break
        for name, fn in calls.items():
            start = time.perf_counter()
            own = fn()
            times[name].append(own if isinstance(own, float) else time.perf_counter() - start)
    return times


def load_image(path: Path | None) -> np.ndarray:
    """The benchmark image (RGB uint8): ``path``, or samtune's synthetic ellipses (nuclei-mini's
    largest size, 12 objects) when there is no such file."""
    if path is not None and path.is_file():
        from PIL import Image

        return np.asarray(Image.open(path).convert("RGB"))
    synthetic = SyntheticDataset(
        num_images=1, size=(520, 696), objects=(12, 12), radius=(0.02, 0.06)
    )
    return synthetic.load(0).image


def png_b64(image: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(ckpt: Path, args: argparse.Namespace, port: int, workdir: Path):
    """``samtune-serve`` as a subprocess; returns it once ``/health`` answers (bounded wait)."""
    import httpx

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env["OMP_NUM_THREADS"] = str(args.threads)
    cmd = [
        sys.executable,
        "-m",
        "samtune.cli.serve",
        f"ckpt={ckpt}",
        f"image_size={args.image_size}",
        f"port={port}",
        f"device={args.device}",
        "log_level=warning",
        "cache_mb=4096",
        "limits.max_prompts=256",
    ]
    proc = subprocess.Popen(
        cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + args.start_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"samtune-serve exited:\n{proc.stdout.read()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"samtune-serve did not answer within {args.start_timeout} s")


def rle_mask(rle: dict) -> np.ndarray:
    from pycocotools import mask as mask_utils

    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def throughput(
    url: str, body: dict, clients: int, *, per_client: int, max_s: float
) -> dict[str, Any]:
    """``clients`` threads, each with its own keep-alive connection, segmenting in a loop."""
    import httpx

    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + max_s

    def worker() -> None:
        with httpx.Client(timeout=300) as http:
            for _ in range(per_client):
                if time.monotonic() > stop:
                    break
                start = time.perf_counter()
                r = http.post(f"{url}/sam2/segment_image", json=body)
                elapsed = time.perf_counter() - start
                with lock:
                    if r.status_code == 200:
                        latencies.append(elapsed)
                    else:
                        errors[0] += 1

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max_s + 300)
    wall = time.perf_counter() - start
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors[0],
        "seconds": wall,
        "requests_per_s": len(latencies) / wall if wall > 0 else 0.0,
        **percentiles(latencies or [float("nan")]),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """All measurements; see the module docstring."""
    # imported on use: sam2 sets up Hydra's global state; httpx is a dev-only dependency
    import httpx
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_sam2_model(args.model, image_size=args.image_size).to(args.device).eval()
    image = load_image(Path(args.image) if args.image else DEFAULT_IMAGE)
    h, w = image.shape[:2]
    point = [[w * 0.5, h * 0.5]]
    results: dict[str, Any] = {
        "model": args.model,
        "image_size": args.image_size,
        "image_hw": [h, w],
        "device": args.device,
        "torch_threads": args.threads,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "weights": "random init",
    }
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / f"{args.model}.pt"
        torch.save({"model": model.state_dict()}, ckpt)
        predictor = fit_feature_sizes(SAM2ImagePredictor(model))

        predictor.set_image(image)

        def inproc_segment() -> None:
            masks, scores, _ = predictor.predict(
                point_coords=point, point_labels=[1], multimask_output=True
            )
            masks[int(np.argmax(scores))]

        def inproc_embed_segment() -> None:
            predictor.set_image(image)
            inproc_segment()

        masks, scores, _ = predictor.predict(
            point_coords=point, point_labels=[1], multimask_output=True
        )
        reference = masks[int(np.argmax(scores))] > 0.5

        port = free_port()
        proc = start_server(ckpt, args, port, Path(tmp))
        url = f"http://127.0.0.1:{port}"
        try:
            version = VERSION_IDS[args.model]
            b64 = png_b64(image)
            prompts = {"prompts": [{"points": [{"x": point[0][0], "y": point[0][1]}]}]}
            http = httpx.Client(timeout=300)
            r = http.post(
                f"{url}/sam2/embed_image",
                json={"image": {"type": "base64", "value": b64}, "image_id": "bench"},
            )
            r.raise_for_status()
            by_id = {"image_id": "bench", "sam2_version_id": version, "prompts": prompts}
            first = http.post(f"{url}/sam2/segment_image", json={**by_id, "format": "rle"})
            first.raise_for_status()
            results["masks_equal_in_process"] = bool(
                np.array_equal(rle_mask(first.json()["predictions"][0]["masks"]), reference)
            )

            handler_times: dict[str, list[float]] = {"rle": [], "json": []}

            def http_segment(fmt: str) -> Any:
                body = {**by_id, "format": fmt}

                def call() -> None:
                    r = http.post(f"{url}/sam2/segment_image", json=body)
                    r.raise_for_status()
                    handler_times[fmt].append(r.json()["time"])  # the server's own clock

                return call

            cached = {
                "segment_cached_in_process": inproc_segment,
                "segment_cached_http_rle": http_segment("rle"),
                "segment_cached_http_json": http_segment("json"),
            }
            try:
                from inference_sdk import InferenceHTTPClient

                client = InferenceHTTPClient(api_url=url, api_key="none")
                png_path = Path(tmp) / "image.png"
                png_path.write_bytes(base64.b64decode(b64))
                cached["segment_cached_inference_sdk_rle"] = lambda: client.sam2_segment_image(
                    str(png_path),
                    prompts=prompts["prompts"],
                    sam2_version_id=version,
                    mask_input_format="rle",
                )
            except ImportError:
                pass
            rows = interleaved(cached, repeats=args.repeats, max_s=args.max_seconds)
            counter = [0]

            def new_image_segment() -> float:
                counter[0] += 1
                fresh = image.copy()
                fresh[0, 0] = [counter[0] % 256, counter[0] // 256 % 256, 7]
                body = {
                    "image": {"type": "base64", "value": png_b64(fresh)},
                    "sam2_version_id": version,
                    "prompts": prompts,
                    "format": "rle",
                }
                start = time.perf_counter()  # PNG encoding on the client is not timed
                http.post(f"{url}/sam2/segment_image", json=body).raise_for_status()
                return time.perf_counter() - start

            rows.update(
                interleaved(
                    {
                        "embed_segment_in_process": inproc_embed_segment,
                        "embed_segment_http_rle": new_image_segment,
                    },
                    repeats=args.embed_repeats,
                    max_s=args.max_seconds,
                    warmup=1,
                )
            )
            http.close()
            body = {**by_id, "format": "rle"}
            results["throughput"] = [
                throughput(url, body, n, per_client=args.per_client, max_s=args.max_seconds)
                for n in args.clients
            ]
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    latency = {key: percentiles(value) for key, value in rows.items()}
    for fmt, times in handler_times.items():  # request parsed -> answer made, inside the server
        latency[f"segment_cached_http_{fmt}"]["server_handler_p50_ms"] = percentiles(times)[
            "p50_ms"
        ]
    base = latency["segment_cached_in_process"]["p50_ms"]
    for key, value in latency.items():
        ref = base if "cached" in key else latency["embed_segment_in_process"]["p50_ms"]
        value["p50_overhead_pct"] = 100.0 * (value["p50_ms"] - ref) / ref
    results["latency"] = latency
    return results


def table(results: dict[str, Any]) -> str:
    """The results as Markdown tables."""
    lat = Table(["call", "p50 ms", "p95 ms", "n", "p50 vs in-process", "server handler p50 ms"])
    for key, value in results["latency"].items():
        handler = value.get("server_handler_p50_ms")
        lat.rows.append(
            [
                key,
                round(value["p50_ms"], 2),
                round(value["p95_ms"], 2),
                value["n"],
                f"{value['p50_overhead_pct']:+.1f}%",
                None if handler is None else round(handler, 2),
            ]
        )
    thr = Table(["clients", "requests/s", "p50 ms", "p95 ms", "requests", "errors"])
    for row in results["throughput"]:
        thr.rows.append(
            [
                row["clients"],
                round(row["requests_per_s"], 2),
                round(row["p50_ms"], 2),
                round(row["p95_ms"], 2),
                row["requests"],
                row["errors"],
            ]
        )
    title = (
        f"{results['model']} at {results['image_size']} px on {results['device']} "
        f"({results['torch_threads']} torch threads), image {results['image_hw'][1]}x"
        f"{results['image_hw'][0]}, masks equal in-process: {results['masks_equal_in_process']}"
    )
    return to_markdown(
        [
            Heading(title, 3),
            Table(lat.header, lat.rows),
            Paragraph("Throughput, segment on a cached embedding (RLE):"),
            thr,
        ]
    )


def main(argv: list[str] | None = None) -> None:
    """Command line: see ``--help``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="sam2.1_hiera_tiny", choices=sorted(VERSION_IDS))
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--image", default=None, help="image file (default: a nuclei-mini image)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads, here and in the server"
    )
    parser.add_argument("--repeats", type=int, default=40, help="timed calls per latency row")
    parser.add_argument("--embed-repeats", type=int, default=10, help="... per embed+segment row")
    parser.add_argument(
        "--clients", type=lambda s: [int(v) for v in s.split(",")], default=[1, 4, 16]
    )
    parser.add_argument("--per-client", type=int, default=20, help="requests per client")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time cap per row")
    parser.add_argument("--start-timeout", type=float, default=300.0)
    parser.add_argument("--out", default=None, help="JSON file to write")
    args = parser.parse_args(argv)
    results = run(args)
    print(table(results))
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()

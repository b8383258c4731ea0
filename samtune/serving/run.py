"""Building the server from ``samtune-serve``'s config and running it with uvicorn."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from samtune.devices import resolve_device
from samtune.models import ModelSpec
from samtune.models.weights import is_none
from samtune.serving.app import Server, create_app
from samtune.serving.cache import EmbeddingCache
from samtune.serving.fetch import UrlFetcher
from samtune.serving.mask_input import LogitsCache
from samtune.serving.model import ServedModel
from samtune.serving.security import KeyCheck, Limits

log = logging.getLogger(__name__)

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _spec(name: str | None, image_size: int | None, checkpoint: Any, cache_dir: Any) -> Any:
    if name is None:
        return None
    kwargs: dict[str, Any] = {"name": str(name), "checkpoint": checkpoint, "cache_dir": cache_dir}
    if image_size is not None:
        kwargs["image_size"] = int(image_size)
    return ModelSpec(**kwargs)


def load_models(
    entries: list[tuple[str | None, Mapping[str, Any]]],
    *,
    device: str,
    cache_dir: str | None = None,
) -> dict[str, ServedModel]:
    """Load each ``(sam2_version_id, {ckpt, model, image_size, checkpoint})`` entry.

    ``ckpt`` is a ``.ckpt``, a ``.pt``, a folder from ``samtune-export format=roboflow`` or none
    (then ``model`` names the size and ``checkpoint`` its weights: ``auto``, a path or null for
    random init). ``image_size`` null keeps the resolution recorded with the weights. A version
    id of None is taken from the model's size (``hiera_tiny``, ...).
    """
    models: dict[str, ServedModel] = {}
    for version_id, entry in entries:
        where = f"models.{version_id}" if version_id else "the model"
        unknown = set(entry) - {"ckpt", "model", "image_size", "checkpoint"}
        if unknown:
            raise ValueError(
                f"{where}: unknown keys {sorted(unknown)}; expected ckpt, model, image_size, "
                "checkpoint"
            )
        ckpt = None if is_none(entry.get("ckpt")) else str(entry["ckpt"])
        if ckpt is None and entry.get("model") is None:
            raise ValueError(
                f"{where}: ckpt is none, so a model size is needed (model=sam2.1_hiera_tiny, "
                "..._small, ..._base_plus, ..._large), or give ckpt=<file>"
            )
        image_size = entry.get("image_size")
        spec = _spec(entry.get("model"), image_size, entry.get("checkpoint", "auto"), cache_dir)
        served = ServedModel.load(
            version_id,
            ckpt,
            spec=spec,
            image_size=None if ckpt is None or image_size is None else int(image_size),
            device=device,
        )
        if served.version_id in models:
            raise ValueError(f"two models are served as sam2_version_id={served.version_id!r}")
        models[served.version_id] = served
    return models


def model_entries(cfg: Mapping[str, Any]) -> list[tuple[str | None, dict[str, Any]]]:
    """The models to serve: ``cfg.models`` if given, else the one of ``model=`` / ``ckpt=``."""
    extra = cfg.get("models") or {}
    if extra:
        return [(str(k), dict(v or {})) for k, v in extra.items()]
    model = cfg.get("model") or {}
    ckpt = cfg.get("ckpt")
    image_size = cfg.get("image_size")
    if image_size is None and is_none(ckpt) and model:
        image_size = model.get("image_size")
    entry = {
        "ckpt": ckpt,
        "model": model.get("name"),
        "image_size": image_size,
        "checkpoint": model.get("checkpoint", "auto"),
    }
    return [(cfg.get("version_id"), entry)]


def build_server(cfg: Mapping[str, Any]) -> Server:
    """Load the models and make the :class:`Server` that ``samtune-serve`` runs."""
    models = load_models(
        model_entries(cfg),
        device=resolve_device(cfg.get("device", "auto")),
        cache_dir=(cfg.get("paths") or {}).get("cache_dir"),
    )
    limits_cfg = cfg.get("limits") or {}
    limits = Limits(
        max_body_bytes=int(float(limits_cfg.get("max_body_mb", 64)) * 2**20),
        max_image_pixels=int(limits_cfg.get("max_image_pixels", 50_000_000)),
        max_prompts=int(limits_cfg.get("max_prompts", 64)),
        max_points_per_prompt=int(limits_cfg.get("max_points_per_prompt", 64)),
    )
    cache = EmbeddingCache(int(float(cfg.get("cache_mb", 1024)) * 2**20))
    allow = list(cfg.get("allow_urls") or [])
    fetch = None
    if allow:
        fetch = UrlFetcher(
            allow,
            max_bytes=limits.max_body_bytes,
            timeout_s=float(limits_cfg.get("url_timeout_s", 10)),
        )
    return Server(
        models,
        cache=cache,
        keys=KeyCheck(cfg.get("api_keys") or []),
        limits=limits,
        fetch=fetch,
        logits=LogitsCache(int(cfg.get("logits_cache_entries", 256))),
    )


def startup_report(server: Server, *, host: str, port: int) -> str:
    """What the server says when it starts: URL, models, weights, auth (loud when off)."""
    lines = [
        f"samtune-serve on http://{host}:{port} (Roboflow SAM 2 API: /sam2/embed_image, "
        "/sam2/segment_image; /info, /health)"
    ]
    for m in server.models.values():
        d = m.describe()
        lines.append(
            f"  sam2_version_id={d['sam2_version_id']}: {d['model']} at {d['image_size']} px on "
            f"{d['device']}, weights {d['weights'] or 'none'} (adapter {d['adapter']})"
            + (" -- RANDOM WEIGHTS" if d["random_init"] else "")
        )
    lines.append(
        f"  embedding cache {server.cache.max_bytes / 2**20:.0f} MiB; limits: body "
        f"{server.limits.max_body_bytes / 2**20:.0f} MiB, {server.limits.max_image_pixels} px, "
        f"{server.limits.max_prompts} prompts"
    )
    if server.fetch is not None:
        lines.append(f"  image URLs fetched from: {', '.join(server.fetch.allow)}")
    if server.keys.enabled:
        lines.append(f"  API keys required ({len(server.keys.keys)} configured)")
    else:
        bar = "!" * 78
        where = "this machine" if host in LOOPBACK else f"ANY HOST THAT CAN REACH {host}:{port}"
        lines += [
            bar,
            f"!! NO API KEYS: every request is accepted, from {where}.",
            "!! Set api_keys='[KEY1,KEY2]' to require ?api_key=KEY or 'Authorization: Bearer KEY'.",
            bar,
        ]
    if any(m.info.get("random_init") for m in server.models.values()):
        lines.append("!! a model serves RANDOM WEIGHTS: its masks say nothing about SAM 2.1")
    return "\n".join(lines)


class _PredictorChatter(logging.Filter):
    """Drops the INFO lines ``SAM2ImagePredictor`` writes to the root logger on every image."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno < logging.WARNING
            and record.name == "root"
            and record.pathname.replace("\\", "/").endswith("sam2/sam2_image_predictor.py")
        )


def quiet_predictor_logs() -> None:
    """Keep sam2's per-request INFO lines out of the server's log (warnings still pass)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _PredictorChatter) for f in handler.filters):
            handler.addFilter(_PredictorChatter())


def serve(cfg: Mapping[str, Any]) -> None:
    """Load the models, say what is served, and run uvicorn until interrupted."""
    import uvicorn

    server = build_server(cfg)
    host, port = str(cfg.get("host", "127.0.0.1")), int(cfg.get("port", 9001))
    report = startup_report(server, host=host, port=port)
    if server.keys.enabled:
        log.info(report)
    else:
        log.warning(report)
    quiet_predictor_logs()
    uvicorn.run(
        create_app(server), host=host, port=port, log_level=str(cfg.get("log_level", "info"))
    )


@contextlib.contextmanager
def background_server(app: Any, *, host: str = "127.0.0.1", start_timeout_s: float = 60.0):
    """Run ``app`` with uvicorn in a thread on a free port of ``host``; yield its base URL.

    For tests, benchmarks and notebooks; the server stops when the block ends.
    """
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"the test server on {host}:{port} did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()

"""The FastAPI app: Roboflow's SAM 2 routes on samtune's models.

Routes: ``POST /sam2/embed_image``, ``POST /sam2/segment_image`` (and ``/sam3/embed_image``,
``/sam3/visual_segment`` with the same schemas), ``GET /health`` and ``GET /info``.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from time import perf_counter
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from samtune import __version__
from samtune.serving.cache import Embedding, EmbeddingCache
from samtune.serving.errors import ApiError, install_error_handlers
from samtune.serving.formats import FORMATS, json_predictions, npz_bytes
from samtune.serving.images import decode_image, pixel_digest
from samtune.serving.mask_input import LogitsCache, parse_mask_input
from samtune.serving.model import ServedModel
from samtune.serving.prompts import PromptBatch, prompt_groups
from samtune.serving.schemas import EmbedRequest, ImageRef, SegmentRequest
from samtune.serving.security import BodyLimit, KeyCheck, Limits

log = logging.getLogger(__name__)

MAX_IMAGE_IDS = 100_000  # ids remembered for requests that send only an image_id


class Server:
    """The state behind the routes: models by ``sam2_version_id``, the cache, keys and limits.

    Args:
        models: ``sam2_version_id`` -> model; the first one answers requests without an id.
        cache: the embedding cache shared by the models (keyed by model and image).
        keys: accepted API keys (empty: no authentication).
        limits: request limits.
        fetch: ``fetch(url) -> bytes`` for ``image.type: url``
            (:class:`~samtune.serving.fetch.UrlFetcher`); None refuses URLs.
        logits: the cache of answers' low-resolution logits (``save_logits_to_cache``).
    """

    def __init__(
        self,
        models: Mapping[str, ServedModel],
        *,
        cache: EmbeddingCache,
        keys: KeyCheck | None = None,
        limits: Limits | None = None,
        fetch: Any = None,
        logits: LogitsCache | None = None,
    ) -> None:
        if not models:
            raise ValueError("the server needs at least one model")
        self.models = dict(models)
        self.default_version = next(iter(self.models))
        self.cache = cache
        self.keys = keys or KeyCheck(None)
        self.limits = limits or Limits()
        self.fetch = fetch
        self.logits = logits or LogitsCache()
        # the content digest last embedded under each (model, image_id), for requests that
        # send only the id
        self._latest: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._latest_lock = threading.Lock()

    def model(self, version_id: str | None) -> ServedModel:
        """The model for ``version_id`` (the default one for None)."""
        if version_id is None or version_id == "":
            return self.models[self.default_version]
        if version_id not in self.models:
            raise ApiError(
                400,
                f"sam2_version_id {version_id!r} is not served here; served: "
                f"{', '.join(self.models)}",
                "sam2_version_id",
            )
        return self.models[version_id]

    def embedding(
        self,
        served: ServedModel,
        image: ImageRef | None,
        image_id: str | None,
        check: Any = None,
    ) -> tuple[Embedding, str, bool]:
        """The embedding of the request's image: from the cache, else encoded.

        Entries are keyed by the model, the ``image_id`` and a digest of the image's pixels: a
        request that sends an image is answered for that image, also when its ``image_id`` was
        used before for another one (the id then names the newer image); a request that sends
        only an ``image_id`` gets the image embedded last under that id.
        ``check(height, width)`` runs after decoding and before the encoder (prompt checks).

        Returns:
            The embedding, its image id and whether it came from the cache.
        """
        if image is None:
            if image_id is None:
                raise ApiError(400, "image or image_id is required", "image")
            with self._latest_lock:
                digest = self._latest.get((served.version_id, image_id))
            found = None
            if digest is not None:
                found = self.cache.get((served.version_id, image_id, digest), count_miss=False)
            if found is None:
                raise ApiError(
                    400,
                    f"image_id {image_id!r} is not in the embedding cache of "
                    f"{served.version_id}: send the image as well",
                    "image",
                )
            return found, image_id, True
        pixels = decode_image(image, max_pixels=self.limits.max_image_pixels, fetch=self.fetch)
        digest = pixel_digest(pixels)
        if image_id is None:
            image_id = digest[:12]  # Roboflow's id: the md5 of the RGB pixels, 12 hex digits
        if check is not None:
            check(*pixels.shape[:2])
        key = (served.version_id, image_id)
        with self._latest_lock:
            previous = self._latest.get(key)
            self._latest[key] = digest
            self._latest.move_to_end(key)
            while len(self._latest) > MAX_IMAGE_IDS:
                self._latest.popitem(last=False)
        if previous is not None and previous != digest:
            log.info(
                "image_id %r of %s now names another image (pixels differ): encoding it",
                image_id,
                served.version_id,
            )
        embedding, cached = self.cache.get_or_compute((*key, digest), lambda: served.encode(pixels))
        return embedding, image_id, cached

    def info(self) -> dict[str, Any]:
        """Models, cache, limits and whether keys are required."""
        return {
            "server": "samtune-serve",
            "samtune_version": __version__,
            "default_sam2_version_id": self.default_version,
            "models": [m.describe() for m in self.models.values()],
            "cache": self.cache.stats(),
            "auth": self.keys.enabled,
            "limits": {
                "max_body_bytes": self.limits.max_body_bytes,
                "max_image_pixels": self.limits.max_image_pixels,
                "max_prompts": self.limits.max_prompts,
                "max_points_per_prompt": self.limits.max_points_per_prompt,
            },
        }


def create_app(server: Server) -> Any:
    """The ASGI app serving ``server`` (FastAPI, wrapped in the body-size limit)."""
    app = FastAPI(
        title="samtune-serve",
        description="Roboflow-compatible SAM 2 routes on samtune's tuned models",
    )
    app.state.server = server
    install_error_handlers(app)

    def authorise(request: Request, body_key: str | None = None) -> None:
        server.keys.check(
            query_key=request.query_params.get("api_key"),
            body_key=body_key,
            header=request.headers.get("authorization"),
        )

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "models": list(server.models)}

    @app.get("/info")
    def info(request: Request) -> dict[str, Any]:
        authorise(request)
        return server.info()

    def embed(body: EmbedRequest, request: Request) -> dict[str, Any]:
        start = perf_counter()
        authorise(request, body.api_key)
        served = server.model(body.sam2_version_id)
        _, image_id, _ = server.embedding(served, body.image, body.image_id)
        return {"image_id": image_id, "time": perf_counter() - start}

    def segment(body: SegmentRequest, request: Request) -> Any:
        start = perf_counter()
        authorise(request, body.api_key)
        served = server.model(body.sam2_version_id)
        fmt = str(body.format).lower()
        if fmt not in FORMATS:
            raise ApiError(
                400, f"format {body.format!r} is not one of {', '.join(FORMATS)}", "format"
            )
        prompts = body.prompts.prompts
        groups: list[list[PromptBatch]] = []

        def check(height: int, width: int) -> None:
            groups.append(
                prompt_groups(
                    prompts,
                    height=height,
                    width=width,
                    max_prompts=server.limits.max_prompts,
                    max_points=server.limits.max_points_per_prompt,
                )
            )

        embedding, image_id, _ = server.embedding(served, body.image, body.image_id, check)
        if not groups:  # a cache hit: check against the cached image's size
            check(*embedding.orig_hw)
        count = sum(g.count for g in groups[0])
        mask_input = None
        if body.mask_input is not None:
            mask_input = parse_mask_input(
                body.mask_input, body.mask_input_format, count=count, size=served.low_res_size
            )
        elif prompts and (body.load_logits_from_cache or body.use_mask_input_cache):
            mask_input = server.logits.find((served.version_id, image_id), prompts)
        result = served.segment(
            embedding, groups[0], multimask_output=body.multimask_output, mask_input=mask_input
        )
        if body.save_logits_to_cache and prompts:
            server.logits.put((served.version_id, image_id), prompts, result.low_res_logits)
        if fmt == "binary":
            return Response(npz_bytes(result), media_type="application/octet-stream")
        return JSONResponse(
            {
                "predictions": json_predictions(result, fmt),
                "time": perf_counter() - start,
                "image_id": image_id,
            }
        )

    async def segment_route(body: SegmentRequest, request: Request) -> Any:
        # A request by image_id alone runs on the event loop: its decoder call is short (the
        # decoder is serialised per model anyway) and a hop to the thread pool was the largest
        # part of the HTTP overhead. One that sends an image (decoding, maybe the encoder)
        # runs in the pool, so the loop keeps serving while it encodes.
        if body.image is None:
            return segment(body, request)
        return await run_in_threadpool(segment, body, request)

    app.post("/sam2/embed_image")(embed)
    app.post("/sam3/embed_image")(embed)
    app.post("/sam2/segment_image")(segment_route)
    app.post("/sam3/visual_segment")(segment_route)
    return BodyLimit(app, server.limits.max_body_bytes)

"""SAM 3's interactive (point / box) image path as a :class:`~samtune.segmenter.base.Segmenter`.

SAM 3 answers point and box prompts with SAM-style heads that live in its tracker
(``Sam3TrackerPredictor``: prompt encoder, mask decoder with ``conv_s0``/``conv_s1``,
``no_mem_embed``), fed by the detector's vision backbone (a ViT trunk and a dual ViTDet neck whose
``sam2_convs`` make the tracker's feature pyramid). ``Sam3Processor.set_image`` plus
``Sam3Image.predict_inst`` run exactly these modules; :class:`Sam3Segmenter` runs the same ones
batched over objects and with gradients allowed.

:func:`build_sam3_interactive` builds these two parts from the installed ``sam3`` package's own
module classes, with the official sizes (``sam3``) or a small test size (``sam3_test``), random
initialised. The state-dict keys of :class:`Sam3Interactive` are those of the official checkpoint
(``detector.backbone.vision_backbone.*`` and ``tracker.*``, as ``sam3.model_builder._load_checkpoint``
maps them), so :func:`save_checkpoint` writes a file sam3's own loader reads, and
:func:`load_checkpoint` reads one strictly. The rest of the official detector (text encoder,
fusion transformer, geometry encoder, segmentation head, scoring) belongs to the text-prompted
path and is not built here.

sam3 hard-codes ``device="cuda"`` in a few tensor factories that run while modules are built;
:func:`sam3_device` maps them to the requested device for the duration of the build only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from samtune.segmenter.base import Decoded, Features, Segmenter, run_in_float32
from samtune.segmenter.sam2 import decode

__all__ = [
    "SAM3_SIZES",
    "Sam3Interactive",
    "Sam3Segmenter",
    "Sam3Size",
    "build_sam3_interactive",
    "get_sam3_size",
    "load_checkpoint",
    "preprocess_like_processor",
    "sam3_device",
    "save_checkpoint",
]

SAM3_MEAN = (0.5, 0.5, 0.5)
SAM3_STD = (0.5, 0.5, 0.5)
PATCH_SIZE = 14

# Parts of the official detector that only the text-prompted (concept) path uses.
CONCEPT_PREFIXES = (
    "detector.backbone.language_backbone.",
    "detector.transformer.",
    "detector.input_geometry_encoder.",
    "detector.segmentation_head.",
    "detector.dot_prod_scoring.",
)


@dataclass(frozen=True)
class Sam3Size:
    """The sizes of SAM 3's vision backbone and tracker heads.

    Attributes:
        name: samtune's name of the size.
        image_size: square input side S (a multiple of 14).
        vit_dim, vit_depth, vit_heads, vit_mlp_ratio: the ViT trunk.
        window_size: window attention side of the non-global blocks (in patches).
        global_att_blocks: indices of the ViT blocks with global attention.
        pretrain_img_size: image side the absolute position embedding was made for (tiled).
        d_model: width of the neck and of the tracker (prompt encoder, mask decoder).
        mem_dim: width of the tracker's memory (its memory encoder's output).
        memory_layers: layers of the tracker's memory attention.
        drop_path_rate: stochastic depth of the ViT (active in train mode only).
        checkpoint_file: official checkpoint file name, or None for a test size.
    """

    name: str
    image_size: int
    vit_dim: int
    vit_depth: int
    vit_heads: int
    vit_mlp_ratio: float
    window_size: int
    global_att_blocks: tuple[int, ...]
    pretrain_img_size: int
    d_model: int
    mem_dim: int
    memory_layers: int
    drop_path_rate: float
    checkpoint_file: str | None


SAM3_SIZES: dict[str, Sam3Size] = {
    s.name: s
    for s in (
        # The numbers of sam3.model_builder (_create_vit_backbone, _create_vit_neck, build_tracker).
        Sam3Size(
            "sam3", 1008, 1024, 32, 16, 4.625, 24, (7, 15, 23, 31), 336, 256, 64, 4, 0.1, "sam3.pt"
        ),  # fmt: skip
        # Small enough for CPU tests; same module classes. Width 32 keeps the mask decoder's 8
        # attention heads at 4 channels each.
        Sam3Size("sam3_test", 112, 32, 2, 2, 4.0, 4, (1,), 56, 32, 16, 1, 0.0, None),
    )
}


def get_sam3_size(name: str) -> Sam3Size:
    """The :data:`SAM3_SIZES` entry ``name``.

    Raises:
        KeyError: naming the known sizes, if ``name`` is unknown.
    """
    try:
        return SAM3_SIZES[name]
    except KeyError:
        raise KeyError(f"unknown SAM 3 size {name!r}; known: {', '.join(SAM3_SIZES)}") from None


def check_image_size(image_size: int) -> int:
    """``image_size`` as an int, if it is a positive multiple of SAM 3's patch size (14).

    Raises:
        ValueError: naming the value and the nearest valid sizes.
    """
    s = int(image_size)
    if s <= 0 or s % PATCH_SIZE:
        lo = max(PATCH_SIZE, s // PATCH_SIZE * PATCH_SIZE)
        raise ValueError(
            f"SAM 3 image_size must be a positive multiple of {PATCH_SIZE}, got {image_size} "
            f"(e.g. {lo} or {lo + PATCH_SIZE})"
        )
    return s


# --------------------------------------------------------------------------------------------
# The device shim
# --------------------------------------------------------------------------------------------

_FACTORIES = ("zeros", "ones", "empty", "full", "arange", "tensor", "rand", "randn", "linspace")
# sam3 modules whose build-time code creates tensors with device="cuda".
_CUDA_MODULES = ("sam3.model.position_encoding", "sam3.model.decoder")


def _device_mapped_torch(device: torch.device) -> types.ModuleType:
    """A stand-in for the ``torch`` name of a module: ``torch`` itself, except that its tensor
    factories turn ``device="cuda"`` into ``device``."""

    proxy = types.ModuleType("torch")
    proxy.__dict__.update(torch.__dict__)

    def mapped(fn):
        @functools.wraps(fn)
        def call(*args, **kwargs):
            d = kwargs.get("device")
            if d is not None and torch.device(d).type == "cuda" and device.type != "cuda":
                kwargs["device"] = device
            return fn(*args, **kwargs)

        return call

    for name in _FACTORIES:
        setattr(proxy, name, mapped(getattr(torch, name)))
    return proxy


@contextlib.contextmanager
def sam3_device(device: str | torch.device) -> Iterator[None]:
    """Inside the block, sam3's hard-coded ``device="cuda"`` tensor factories create their
    tensors on ``device`` instead (nothing changes when ``device`` is a CUDA device).

    Only the ``torch`` name inside the sam3 modules that need it is replaced, and it is put back
    on exit (also on an error); no other module sees a change.
    """
    import importlib

    device = torch.device(device)
    saved = []
    try:
        for name in _CUDA_MODULES:
            module = importlib.import_module(name)
            saved.append((module, module.torch))
            module.torch = _device_mapped_torch(device)
        yield
    finally:
        for module, original in saved:
            module.torch = original


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


def _vision_backbone(size: Sam3Size) -> torch.nn.Module:
    """``SAM3VLBackbone`` with the ViT trunk and the dual neck, no text encoder (as
    ``_create_vision_backbone(enable_inst_interactivity=True)`` and ``_create_vl_backbone``)."""
    from sam3.model.necks import Sam3DualViTDetNeck
    from sam3.model.position_encoding import PositionEmbeddingSine
    from sam3.model.vitdet import ViT
    from sam3.model.vl_combiner import SAM3VLBackbone

    trunk = ViT(
        img_size=size.image_size,
        pretrain_img_size=size.pretrain_img_size,
        patch_size=PATCH_SIZE,
        embed_dim=size.vit_dim,
        depth=size.vit_depth,
        num_heads=size.vit_heads,
        mlp_ratio=size.vit_mlp_ratio,
        norm_layer="LayerNorm",
        drop_path_rate=size.drop_path_rate,
        qkv_bias=True,
        use_abs_pos=True,
        tile_abs_pos=True,
        global_att_blocks=size.global_att_blocks,
        rel_pos_blocks=(),
        use_rope=True,
        use_interp_rope=True,
        window_size=size.window_size,
        pretrain_use_cls_token=True,
        retain_cls_token=False,
        ln_pre=True,
        ln_post=False,
        return_interm_layers=False,
        bias_patch_embed=False,
        compile_mode=None,
    )
    position_encoding = PositionEmbeddingSine(
        num_pos_feats=size.d_model,
        normalize=True,
        scale=None,
        temperature=10000,
        precompute_resolution=size.image_size,
    )
    neck = Sam3DualViTDetNeck(
        position_encoding=position_encoding,
        d_model=size.d_model,
        scale_factors=[4.0, 2.0, 1.0, 0.5],
        trunk=trunk,
        add_sam2_neck=True,
    )
    return SAM3VLBackbone(visual=neck, text=None, scalp=1)


def _tracker(size: Sam3Size) -> torch.nn.Module:
    """``Sam3TrackerPredictor`` without a backbone, as ``build_tracker`` makes it."""
    from sam3.model.decoder import TransformerDecoderLayerv2, TransformerEncoderCrossAttention
    from sam3.model.memory import CXBlock, SimpleFuser, SimpleMaskDownSampler, SimpleMaskEncoder
    from sam3.model.model_misc import TransformerWrapper
    from sam3.model.position_encoding import PositionEmbeddingSine
    from sam3.model.sam3_tracking_predictor import Sam3TrackerPredictor
    from sam3.sam.transformer import RoPEAttention

    d, feat = size.d_model, size.image_size // PATCH_SIZE
    maskmem_backbone = SimpleMaskEncoder(
        out_dim=size.mem_dim,
        in_dim=d,
        position_encoding=PositionEmbeddingSine(
            num_pos_feats=size.mem_dim,
            normalize=True,
            scale=None,
            temperature=10000,
            precompute_resolution=size.image_size,
        ),
        mask_downsampler=SimpleMaskDownSampler(
            embed_dim=d,
            kernel_size=3,
            stride=2,
            padding=1,
            interpol_size=[size.image_size * 8 // 7, size.image_size * 8 // 7],
        ),
        fuser=SimpleFuser(
            layer=CXBlock(
                dim=d, kernel_size=7, padding=3, layer_scale_init_value=1.0e-06, use_dwconv=True
            ),
            num_layers=2,
        ),
    )
    layer = TransformerDecoderLayerv2(
        cross_attention_first=False,
        activation="relu",
        dim_feedforward=2048,
        dropout=0.1,
        pos_enc_at_attn=False,
        pre_norm=True,
        self_attention=RoPEAttention(
            embedding_dim=d,
            num_heads=1,
            downsample_rate=1,
            dropout=0.1,
            rope_theta=10000.0,
            feat_sizes=[feat, feat],
            use_fa3=False,
            use_rope_real=False,
        ),
        d_model=d,
        pos_enc_at_cross_attn_keys=True,
        pos_enc_at_cross_attn_queries=False,
        cross_attention=RoPEAttention(
            embedding_dim=d,
            num_heads=1,
            downsample_rate=1,
            dropout=0.1,
            kv_in_dim=size.mem_dim,
            rope_theta=10000.0,
            feat_sizes=[feat, feat],
            rope_k_repeat=True,
            use_fa3=False,
            use_rope_real=False,
        ),
    )
    transformer = TransformerWrapper(
        encoder=TransformerEncoderCrossAttention(
            remove_cross_attention_layers=[],
            batch_first=True,
            d_model=d,
            frozen=False,
            pos_enc_at_input=True,
            layer=layer,
            num_layers=size.memory_layers,
            use_act_checkpoint=False,
        ),
        decoder=None,
        d_model=d,
    )
    tracker = Sam3TrackerPredictor(
        image_size=size.image_size,
        num_maskmem=7,
        backbone=None,
        backbone_stride=PATCH_SIZE,
        transformer=transformer,
        maskmem_backbone=maskmem_backbone,
        multimask_output_in_sam=True,
        forward_backbone_per_frame_for_eval=True,
        trim_past_non_cond_mem_for_eval=False,
        multimask_output_for_tracking=True,
        multimask_min_pt_num=0,
        multimask_max_pt_num=1,
        always_start_from_first_ann_frame=False,
        non_overlap_masks_for_mem_enc=False,
        non_overlap_masks_for_output=False,
        max_cond_frames_in_attn=4,
        offload_output_to_cpu_for_eval=False,
        sam_mask_decoder_extra_args={
            "dynamic_multimask_via_stability": True,
            "dynamic_multimask_stability_delta": 0.05,
            "dynamic_multimask_stability_thresh": 0.98,
        },
        clear_non_cond_mem_around_input=True,
        fill_hole_area=0,
        use_memory_selection=False,
    )
    # The predictor enters a CUDA bf16 autocast in its constructor and never leaves it; leave it
    # here so that it does not outlive the build (samtune chooses the precision itself).
    tracker.bf16_context.__exit__(None, None, None)
    return tracker


class Sam3Interactive(torch.nn.Module):
    """The modules of SAM 3's interactive image path, under the official checkpoint's names.

    Attributes:
        detector: holds ``backbone`` (``SAM3VLBackbone``, vision only: ViT trunk, ``convs`` of
            the concept path and ``sam2_convs`` of the interactive path).
        tracker: ``Sam3TrackerPredictor`` without a backbone (prompt encoder, mask decoder,
            ``no_mem_embed``, and the memory modules used only on video).
        size: the :class:`Sam3Size` it was built with.
    """

    def __init__(self, backbone: torch.nn.Module, tracker: torch.nn.Module, size: Sam3Size):
        super().__init__()
        self.detector = torch.nn.Module()
        self.detector.backbone = backbone
        self.tracker = tracker
        self.size = size

    @property
    def image_size(self) -> int:
        return int(self.tracker.image_size)

    @property
    def image_encoder(self) -> torch.nn.Module:
        """The vision backbone (trunk and both necks): what a frozen encoder freezes."""
        return self.detector.backbone.vision_backbone


def build_sam3_interactive(
    size: str | Sam3Size = "sam3_test",
    *,
    image_size: int | None = None,
    device: str | torch.device = "cpu",
    seed: int | None = None,
) -> Sam3Interactive:
    """Build SAM 3's vision backbone and tracker heads, random initialised, in eval mode.

    Args:
        size: a :data:`SAM3_SIZES` name or a :class:`Sam3Size`.
        image_size: overrides the size's input side (a multiple of 14).
        device: where the model is built (sam3's hard-coded CUDA tensors are mapped to it).
        seed: seeds ``torch`` for the initialisation when given (the global RNG state is
            restored afterwards).
    """
    spec = get_sam3_size(size) if isinstance(size, str) else size
    if image_size is not None:
        spec = dataclasses.replace(spec, image_size=check_image_size(image_size))
    check_image_size(spec.image_size)
    device = torch.device(device)
    rng = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with rng, sam3_device(device), torch.device(device):
        if seed is not None:
            torch.manual_seed(seed)
        model = Sam3Interactive(_vision_backbone(spec), _tracker(spec), spec)
    return model.eval()


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def save_checkpoint(model: Sam3Interactive, path: str | Path) -> Path:
    """Write ``model``'s weights as an official SAM 3 checkpoint (``{"model": state_dict}``)."""
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"model": state}, path)
    return path


def _first(keys: list[str], n: int = 5) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def load_checkpoint(model: Sam3Interactive, path: str | Path) -> list[str]:
    """Load an official-format SAM 3 checkpoint into ``model``, strictly.

    Every key of ``model`` must be in the file with the same shape, and every key of the file
    must belong to ``model`` or to the concept path's detector parts (:data:`CONCEPT_PREFIXES`,
    which this model does not build). Nothing is loaded unless all checks pass.

    Returns:
        The file's concept-path keys that were not loaded (empty for a file this module wrote).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming the file and the first missing, unexpected or mis-shaped keys.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SAM 3 checkpoint {path} does not exist")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict):
        ckpt = ckpt["model"]
    if not isinstance(ckpt, dict):
        raise ValueError(f"SAM 3 checkpoint {path}: expected a state dict, got {type(ckpt)}")
    own = model.state_dict()
    skipped = sorted(k for k in ckpt if k not in own and k.startswith(CONCEPT_PREFIXES))
    missing = sorted(k for k in own if k not in ckpt)
    unexpected = sorted(k for k in ckpt if k not in own and not k.startswith(CONCEPT_PREFIXES))
    shapes = sorted(
        f"{k} {tuple(ckpt[k].shape)} != {tuple(own[k].shape)}"
        for k in own
        if k in ckpt and tuple(ckpt[k].shape) != tuple(own[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_first(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_first(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} keys of another shape (file != model): {_first(shapes)}")
    if problems:
        raise ValueError(
            f"SAM 3 checkpoint {path} does not match the model ({model.size.name}, image_size "
            f"{model.image_size}): " + "; ".join(problems)
        )
    model.load_state_dict({k: ckpt[k] for k in own}, strict=True)
    return skipped


# --------------------------------------------------------------------------------------------
# Preprocessing, encoding, decoding
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _processor_transform(image_size: int):
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.ToDtype(torch.uint8, scale=True),
            v2.Resize(size=(image_size, image_size)),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(SAM3_MEAN), std=list(SAM3_STD)),
        ]
    )


def preprocess_like_processor(images: list[np.ndarray], image_size: int) -> torch.Tensor:
    """HxWx3 uint8 images to ``B x 3 x S x S`` as ``Sam3Processor.set_image`` prepares them:
    uint8 resize to S x S (antialiased), then ``(x / 255 - 0.5) / 0.5``."""
    transform = _processor_transform(check_image_size(image_size))
    out = []
    for i, img in enumerate(images):
        img = np.asarray(img)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(
                f"image {i}: expected an HxWx3 uint8 array, got shape {img.shape} {img.dtype}"
            )
        out.append(transform(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)))
    return torch.stack(out)


def neck_levels(model: Sam3Interactive, images: torch.Tensor) -> list[torch.Tensor]:
    """The interactive neck's levels (``sam2_convs`` on the trunk output, lowest level dropped
    as ``SAM3VLBackbone`` does with ``scalp=1``), before ``conv_s0``/``conv_s1``."""
    backbone = model.detector.backbone
    neck = backbone.vision_backbone
    x = neck.trunk(images)[-1]
    convs = list(neck.sam2_convs)
    if backbone.scalp > 0:
        convs = convs[: -backbone.scalp]
    return [conv(x) for conv in convs]


def features_from_levels(model: Sam3Interactive, levels: list[torch.Tensor]) -> Features:
    """:class:`Features` from :func:`neck_levels`: ``conv_s0``/``conv_s1`` on the two highest
    levels and the no-memory embedding on the lowest, as ``set_image`` and ``predict_inst`` do."""
    tracker = model.tracker
    levels = list(levels[-tracker.num_feature_levels :])
    levels[0] = tracker.sam_mask_decoder.conv_s0(levels[0])
    levels[1] = tracker.sam_mask_decoder.conv_s1(levels[1])
    image_embed = levels[-1] + tracker.no_mem_embed.reshape(1, -1, 1, 1)
    return Features(image_embed=image_embed, high_res=levels[:-1])


class Sam3Segmenter(Segmenter):
    """SAM 3's interactive image path (vision backbone, tracker prompt encoder and mask decoder)
    as a :class:`Segmenter`.

    The image encoder counts as frozen while none of the vision backbone's parameters requires a
    gradient; it then runs without a graph (``conv_s0``/``conv_s1`` and ``no_mem_embed``, which
    belong to the tracker, run under the current grad mode). Low-resolution logits are
    ``4 S / 14`` on a side, and a ``mask_input`` must have that size. The IoU and object-score
    heads run in float32 also under autocast (forward hooks; weights and keys unchanged), as in
    :class:`~samtune.segmenter.sam2.Sam2Segmenter`.

    Args:
        model: a :class:`Sam3Interactive` (weights loaded).
    """

    def __init__(self, model: Sam3Interactive) -> None:
        super().__init__()
        self.model = model
        self.image_size = check_image_size(model.image_size)
        decoder = model.tracker.sam_mask_decoder
        run_in_float32(decoder.iou_prediction_head)
        if getattr(decoder, "pred_obj_score_head", None) is not None:
            run_in_float32(decoder.pred_obj_score_head)

    @property
    def encoder_frozen(self) -> bool:
        """Whether no vision-backbone parameter requires a gradient."""
        return not any(p.requires_grad for p in self.model.image_encoder.parameters())

    def train(self, mode: bool = True) -> Sam3Segmenter:
        """Train mode, except for a frozen image encoder, which stays in eval mode (its drop
        path would otherwise make the features random)."""
        super().train(mode)
        if mode and self.encoder_frozen:
            self.model.image_encoder.eval()
        return self

    def preprocess(self, images: list[np.ndarray]) -> torch.Tensor:
        """Resize and normalise as ``Sam3Processor.set_image`` does."""
        return preprocess_like_processor(images, self.image_size)

    def encode(self, images: torch.Tensor) -> Features:
        """Image features of normalised ``B x 3 x S x S`` images."""
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"Sam3Segmenter.encode: expected B x 3 x {self.image_size} x {self.image_size} "
                f"images, got {tuple(images.shape)}"
            )
        if self.encoder_frozen:
            with torch.no_grad():
                levels = neck_levels(self.model, images)
        else:
            levels = neck_levels(self.model, images)
        return features_from_levels(self.model, levels)

    def decode(
        self,
        features: Features,
        img_idx: torch.Tensor,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        *,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool,
    ) -> Decoded:
        """Prompt encoder and mask decoder for N objects in one call (boxes before clicks, as
        sam3's predictor orders them). The tracker's heads are SAM 2's prompt encoder and mask
        decoder, so SAM 2's :func:`~samtune.segmenter.sam2.decode` drives them."""
        tracker = self.model.tracker
        if coords is not None and labels is None:
            raise ValueError("Sam3Segmenter.decode: coords given without labels")
        if mask_input is not None:
            want = tuple(tracker.sam_prompt_encoder.mask_input_size)
            if tuple(mask_input.shape[-2:]) != want:
                raise ValueError(
                    f"Sam3Segmenter.decode: mask_input must be N x 1 x {want[0]} x {want[1]} "
                    f"(4 S / 14), got {tuple(mask_input.shape)}"
                )
        return decode(
            tracker,
            features,
            img_idx,
            coords,
            labels,
            boxes=boxes,
            mask_input=mask_input,
            multimask_output=multimask_output,
        )

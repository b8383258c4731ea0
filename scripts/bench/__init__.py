"""samtune's speed and memory, side by side in one run: prints tables and writes JSON.

Run from the repository root as ``python -m scripts.bench`` (``make benchmark``). Sections
(``--sections``), one file each:

- ``encoder`` (encoder.py): image-encoder images/s and achieved GFLOP/s per model size, fp32 vs
  bf16 autocast.
- ``train`` (train.py): one training step (the default prompt recipe,
  ``configs/prompts/default.yaml``) for frozen + cache hit, frozen recomputed, LoRA, LoRA +
  checkpointing of the Hiera blocks, LoRA + checkpointing of the Hiera blocks and of each prompt
  step, and full fine-tuning: seconds/step, peak memory next to samtune's estimate, FLOPs/step;
  ratios to "frozen recomputed" and "full", measured next to what the FLOPs predict. Each
  configuration runs in its own process so that its peak memory is its own (RSS on the CPU,
  ``max_memory_allocated`` on a GPU).
- ``cache`` (cache.py): adapter=frozen, cache-hit and recomputed steps alternating in one process
  (same model, prompts and load), the speed-up measured next to the one FLOPs predict.
- ``eval`` (evaluation.py): objects/s of samtune's ``Evaluator`` (``point1``) vs a loop over the
  official ``SAM2ImagePredictor`` (``set_image`` once per image, ``predict`` once per object),
  same weights, images and clicks.
- ``predictor`` (predictor.py): latency of ``set_image`` + ``predict`` for
  ``samtune.load_predictor`` vs the official predictor built by ``sam2.build_sam.build_sam2``.
- ``clips`` (clips.py): a ``training=video`` clip step (T frames, N objects, correction frames)
  against T image steps on the same model, with the clip step's peak memory next to samtune's
  estimate; and samtune's ``propagate_mask`` clip evaluation against a plain loop over the
  official ``SAM2VideoPredictor`` on the same generated clips (their masks must be equal).

Models, adapters, prompts, loss, optimiser settings, the evaluator and the data are composed from
samtune's shipped Hydra configs (compose.py), as ``samtune-train`` and ``samtune-eval`` build them.
Weights are random (timings do not depend on them); images come from nuclei-mini (bundled), or
samtune's synthetic ellipses with ``--data none``. Every time is the fastest of its repetitions (the
least disturbed by other work on a shared machine). Runs on the GPU when there is one
(``--device``), else the CPU. ``--quick`` is the seconds-long smoke run the tests use.
"""

"""``model.image_size`` is the one resolution key of every command (predict and serve included)."""

from __future__ import annotations

from samtune.cli._hydra import model_size_arguments


def test_without_a_model_group_the_key_is_handed_to_the_app():
    argv = ["samtune-serve", "ckpt=a.pt", "model.image_size=512", "port=9001"]
    assert model_size_arguments(argv) == [
        "samtune-serve",
        "ckpt=a.pt",
        "image_size=512",
        "port=9001",
    ]


def test_with_a_model_group_hydra_reads_it_itself():
    argv = ["samtune-serve", "model=sam2.1_hiera_tiny", "ckpt=none", "model.image_size=512"]
    assert model_size_arguments(argv) == argv
    # other keys that merely end the same way are left alone
    assert model_size_arguments(["x", "data.image_size=3"]) == ["x", "data.image_size=3"]

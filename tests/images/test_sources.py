"""Naming and listing inputs (`onnxcam.images.sources`): folders, patterns and output stems."""
from __future__ import annotations

from onnxcam.images.sources import expand_inputs, output_stems


def test_expand_inputs(tmp_path):
    for name in ["b.png", "a.jpg", "sub/c.JPEG", "sub/notes.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    files, errors = expand_inputs([str(tmp_path), str(tmp_path / "*.png"), str(tmp_path / "nope.png"),
                                   str(tmp_path / "*.gif"), str(tmp_path / "empty")])
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["a.jpg", "b.png", "sub/c.JPEG"]
    assert errors == [f"{tmp_path / 'nope.png'}: cannot read image (no such file or directory)",
                      f"{tmp_path / '*.gif'}: no files match this pattern",
                      f"{tmp_path / 'empty'}: no images found in this folder"]


def test_output_stems_avoid_collisions(tmp_path):
    paths = [tmp_path / "a" / "cat.jpg", tmp_path / "b" / "cat.jpg", tmp_path / "dog.png",
             tmp_path / "b" / "Cat.png"]
    assert output_stems(paths) == ["a_cat_jpg", "b_cat_jpg", "dog", "b_Cat_png"]


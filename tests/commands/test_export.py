"""`af-jax export`: prepared categories as MVTec-layout PNG files, whole or not at all."""

import pathlib

import numpy as np

from af_jax import cli
from af_jax.commands import export
from af_jax import input_pipeline
from af_jax import pixels


def _files(folder: pathlib.Path) -> set[str]:
  return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_export_writes_the_mvtec_layout_with_the_prepared_pixels(tiny_synthetic, tmp_path,
                                                                 capsys):
  data_dir, names = tiny_synthetic
  out = tmp_path / "images"
  assert cli.main(["export", "--data_dir", str(data_dir), "--dataset", "synthetic",
                   "--categories", f"{names[0]},gear", "--out", str(out)]) == 0
  assert f"synthetic/{names[0]} -> {out / 'circuit'}" in capsys.readouterr().out
  assert sorted(p.name for p in out.iterdir()) == ["circuit", "gear"]  # Nothing half-written.
  expected = set()
  for split in ("train", "test"):
    for ex in input_pipeline.make_eval_dataset(data_dir, "synthetic", names[0], split):
      defect = ex["defect"] if ex["label"] else "good"
      image = out / "circuit" / split / defect / pathlib.PurePosixPath(ex["file_name"]).name
      np.testing.assert_array_equal(pixels.read_rgb(image), ex["image"])
      expected.add(str(image.relative_to(out / "circuit")))
      if ex["label"]:
        mask = out / "circuit" / "ground_truth" / defect / f"{image.stem}_mask.png"
        np.testing.assert_array_equal(pixels.read_mask(mask), ex["mask"][..., 0] > 0)
        expected.add(str(mask.relative_to(out / "circuit")))
  assert _files(out / "circuit") == expected
  assert len([f for f in expected if f.startswith("train/good/")]) == 8
  assert len([f for f in expected if f.startswith("ground_truth/")]) == 6

  # An export is kept unless --overwrite, which replaces it whole.
  (out / "circuit" / "stale.png").write_bytes(b"")
  assert cli.main(["export", "--data_dir", str(data_dir), "--dataset", "synthetic",
                   "--categories", "circuit", "--out", str(out)]) == 1
  assert "already exists; pass --overwrite" in capsys.readouterr().err
  assert cli.main(["export", "--data_dir", str(data_dir), "--dataset", "synthetic",
                   "--categories", "circuit", "--out", str(out), "--overwrite"]) == 0
  assert _files(out / "circuit") == expected
  assert sorted(p.name for p in out.iterdir()) == ["circuit", "gear"]


def test_two_images_sharing_a_stem_keep_both(tmp_path):
  """Real-IAD-like names: one stem in several source folders."""
  examples = [dict(label=0, defect="good", file_name=f"S{k}/C1.jpg",
                   image=np.full((8, 8, 3), k, np.uint8), mask=np.zeros((8, 8, 1), np.uint8))
              for k in range(3)]
  export._write_split(examples, tmp_path, "train")  # pylint: disable=protected-access
  folder = tmp_path / "train" / "good"
  assert sorted(p.name for p in folder.iterdir()) == ["C1.png", "C1_2.png", "C1_3.png"]
  assert pixels.read_rgb(folder / "C1_3.png")[0, 0, 0] == 2


def test_a_full_disk_leaves_no_partial_export_and_keeps_the_previous_one(tiny_synthetic,
                                                                          small_disk, capsys):
  data_dir, names = tiny_synthetic
  disk = small_disk(128 * 1024)  # One export (22 files of a 4 KB page each), not two.
  args = ["export", "--data_dir", str(data_dir), "--dataset", "synthetic", "--categories",
          names[0], "--out", str(disk)]
  assert cli.main(args) == 0
  before = {f: (disk / "circuit" / f).read_bytes() for f in _files(disk / "circuit")}
  assert cli.main([*args, "--overwrite"]) == 1
  err = capsys.readouterr().err
  assert err.strip().splitlines()[-1].startswith("af-jax export: error: [Errno 28] No space")
  assert [p.name for p in disk.iterdir()] == ["circuit"]  # No temporary folder left behind.
  assert {f: (disk / "circuit" / f).read_bytes() for f in _files(disk / "circuit")} == before

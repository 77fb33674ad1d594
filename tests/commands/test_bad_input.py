"""Bad or unusual input to the inference verbs and the Python API: one clear error, nothing lost.

Each case uses real files (zero-byte, truncated, odd shapes, hostile names) and checks the one
`af-jax <verb>: error:` line (or argparse's usage error, exit 2, naming the flag), that no
traceback is printed, and that nothing outside `--out` and nothing of the run changed.
"""

import csv
import json
import pathlib
import shutil

import cv2
import numpy as np
import pytest

from af_jax import checkpoint
from af_jax import infer
from af_jax.evidence import reference
from af_jax import run_lock
from af_jax.commands import localize
from af_jax.commands import output_files
from conftest import copy_run, file_hashes, run_cli


@pytest.fixture
def blaze(runs, tmp_path):
  return copy_run(runs[0] / "blaze", tmp_path / "blaze")


@pytest.fixture
def images(runs, tmp_path):
  """A folder of 12 normal images (PNG), from the tiny synthetic set's train split."""
  from af_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  _, data_dir, names = runs
  folder = tmp_path / "normal"
  folder.mkdir()
  examples = list(input_pipeline.make_eval_dataset(data_dir, "synthetic", names[0], "train"))
  for k in range(12):
    image = np.asarray(examples[k % len(examples)]["image"])
    assert cv2.imwrite(str(folder / f"{k:03d}.png"), image[..., ::-1])
  return folder


# ------------------------------------------------------------------ writes outside --out
@pytest.mark.parametrize("category", ["/some/folder", "../../x", "a/b", "..", ".hidden", "",
                                      "x" * 255])  # Too long: was OSError: File name too long.
def test_a_category_is_a_plain_name_never_a_path(runs, images, tmp_path, capsys, category):
  victim = tmp_path / "victim"
  (victim / "images").mkdir(parents=True)
  (victim / "images" / "my_photo.txt").write_text("mine")
  before = file_hashes(tmp_path)
  code, err = run_cli("generate", "--workdir", runs[0] / "flare", "--images", images,
                      "--out", tmp_path / "out", "--category", category, "--overwrite",
                      capsys=capsys)
  assert code == 2 and "--category" in err and "plain name" in err, err
  assert file_hashes(tmp_path) == before


def test_overwrite_replaces_only_what_af_jax_wrote(blaze, images, tmp_path, capsys):
  out = tmp_path / "loc"
  args = ("localize", "--workdir", blaze, "--images", images, "--out", out,
          "--pixel_threshold", 0.5, "--image_threshold", 0.5)
  assert run_cli(*args, capsys=capsys)[0] == 0
  (out / "masks" / "labels.txt").write_text("a user's notes")
  (out / "my_photo.txt").write_text("mine")
  code, err = run_cli(*args, capsys=capsys)
  assert code == 1 and "already holds output" in err and "--overwrite" in err
  assert run_cli(*args, "--overwrite", capsys=capsys)[0] == 0
  assert (out / "masks" / "labels.txt").read_text() == "a user's notes"
  assert (out / "my_photo.txt").read_text() == "mine"
  assert len(list((out / "heatmaps").glob("*.npy"))) == 12
  with (out / localize.SCORES_CSV).open() as f:
    assert len(list(csv.DictReader(f))) == 12  # One run's rows, not two runs' appended.


def test_a_second_command_on_one_output_folder_is_refused(blaze, images, tmp_path, capsys):
  out = tmp_path / "loc"
  out.mkdir()
  with run_lock.RunLock(out, purpose="output"):  # As another `localize` holds it.
    code, err = run_cli("localize", "--workdir", blaze, "--images", images, "--out", out,
                        "--pixel_threshold", 0.5, "--image_threshold", 0.5, "--overwrite",
                        capsys=capsys)
  assert code == 1 and "is in use" in err and "writing output into it" in err, err
  assert not any(p.name != ".af_jax_output.lock.process_0" for p in out.iterdir())


# ------------------------------------------------------------------ the run's own files
def test_calibration_changes_the_run_only_after_the_command_succeeded(blaze, images, tmp_path,
                                                                      capsys):
  existing = tmp_path / "existing"
  existing.mkdir()
  (existing / localize.SCORES_CSV).write_text("file,score,decision\n")
  run_files = file_hashes(blaze)
  code, err = run_cli("localize", "--workdir", blaze, "--images", images, "--out", existing,
                      "--calibrate", images, capsys=capsys)
  assert code == 1 and "scores.csv was not written by af_jax" in err, err
  assert file_hashes(blaze) == run_files  # No thresholds.json was written.

  one = tmp_path / "one"
  one.mkdir()
  shutil.copy(images / "000.png", one / "000.png")
  code, err = run_cli("localize", "--workdir", blaze, "--images", images, "--out", tmp_path / "o",
                      "--calibrate", one, capsys=capsys)
  assert code == 1 and "holds 1 normal images" in err and "at least 10" in err, err
  assert file_hashes(blaze) == run_files

  code, _ = run_cli("localize", "--workdir", blaze, "--images", images, "--out", tmp_path / "o",
                    "--calibrate", images, capsys=capsys)
  assert code == 0
  saved = json.loads((blaze / infer.THRESHOLDS_FILE).read_text())
  assert saved["categories"]["*"]["num_images"] == 12


# ------------------------------------------------------------------ silent wrong results
def test_links_that_lead_nowhere_among_the_images_are_named(blaze, images, tmp_path, capsys):
  """A symbolic link loop or a dangling link in --images was a traceback."""
  (images / "loop.png").symlink_to(images / "loop.png")
  (images / "gone.png").symlink_to(tmp_path / "deleted.png")
  before = file_hashes(tmp_path)
  code, err = run_cli("localize", "--workdir", blaze, "--images", images, "--out", tmp_path / "o",
                      "--pixel_threshold", 0.5, "--image_threshold", 0.5, capsys=capsys)
  assert code == 1 and err.startswith("af-jax localize: error: 2 image path(s) lead to no "), err
  assert f"{images / 'loop.png'} is a symbolic link loop" in err, err
  assert f"{images / 'gone.png'} is a symbolic link to {tmp_path / 'deleted.png'}, which does " \
         "not exist" in err, err
  assert file_hashes(tmp_path) == before and not (tmp_path / "o").exists()


def test_a_single_image_array_is_refused_not_read_as_rows(runs, blaze, images):
  image = cv2.imread(str(images / "000.png"))
  with pytest.raises(ValueError, match=r"one array of shape \(32, 32, 3\).*\[image\]"):
    infer.Detector(blaze, batch_size=4).localize(image)
  with pytest.raises(ValueError, match=r"one array of shape \(8, 32, 3\)"):
    infer.Generator(runs[0] / "flare", batch_size=4).generate(image[:8])
  with pytest.raises(ValueError, match=r"image 0 is empty"):
    infer.Detector(blaze, batch_size=4).localize([np.zeros((0, 32, 3), np.uint8)])
  assert infer.Detector(blaze, batch_size=4).localize(image[None]).heatmaps.shape == (1, 32, 32)


@pytest.mark.parametrize("flags, named", [
    (("--pixel_threshold", "nan", "--image_threshold", "nan"), "--pixel_threshold"),
    (("--pixel_threshold", "0.5", "--image_threshold", "1.5"), "--image_threshold"),
    (("--smoothing_sigma", "nan"), "--smoothing_sigma"),
    (("--smoothing_sigma", "-1"), "--smoothing_sigma"),
    (("--step", "-5"), "--step"),
    (("--dtype", "float7"), "--dtype"),
    (("--fpr", "0"), "--fpr"),
    (("--batch_size", "0"), "--batch_size"),
])
def test_bad_numbers_are_refused_at_the_flag(blaze, images, tmp_path, capsys, flags, named):
  code, err = run_cli("localize", "--workdir", blaze, "--images", images, "--out", tmp_path / "o",
                      *flags, capsys=capsys)
  assert code == 2 and named in err, err
  assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flags, named", [
    (("--mask_threshold", "5"), "--mask_threshold"), (("--mask_threshold", "nan"),
                                                      "--mask_threshold"),
    (("--mask_threshold", "-1"), "--mask_threshold"), (("--seed", "-7"), "--seed"),
    (("--num", "0"), "--num"),
])
def test_bad_generate_numbers_are_refused_at_the_flag(runs, images, tmp_path, capsys, flags,
                                                      named):
  code, err = run_cli("generate", "--workdir", runs[0] / "flare", "--images", images,
                      "--out", tmp_path / "o", *flags, capsys=capsys)
  assert code == 2 and named in err, err
  assert not (tmp_path / "o").exists()


def test_bad_numbers_are_refused_by_the_api(runs, blaze, images):
  image = cv2.imread(str(images / "000.png"))[..., ::-1]
  for sigma in (float("nan"), -1):
    with pytest.raises(ValueError, match="smoothing_sigma must be finite and >= 0"):
      infer.Detector(blaze, smoothing_sigma=sigma)
  with pytest.raises(ValueError, match="step"):
    infer.Detector(blaze, step=-5)
  with pytest.raises(ValueError, match="unknown compute dtype 'float7'"):
    infer.Detector(blaze, dtype="float7")
  generator = infer.Generator(runs[0] / "flare", batch_size=4)
  for threshold in (5, float("nan"), -1):
    with pytest.raises(ValueError, match=r"mask_threshold must be a finite number in \[0, 1\]"):
      generator.generate([image], mask_threshold=threshold)
  with pytest.raises(ValueError, match="seed must be an integer >= 0"):
    generator.generate([image], seed=-7)
  with pytest.raises(ValueError, match=r"threshold must be a finite number in \[0, 1\]"):
    infer.Detector(blaze).threshold("pixel", override=float("nan"))


def test_a_file_name_with_a_newline_stays_one_csv_row(blaze, images, tmp_path, capsys):
  odd = tmp_path / "odd"
  odd.mkdir()
  shutil.copy(images / "000.png", odd / "a\nb,c\".png")
  assert run_cli("localize", "--workdir", blaze, "--images", odd, "--out", tmp_path / "o",
                 "--pixel_threshold", 0.5, "--image_threshold", 0.5, capsys=capsys)[0] == 0
  with (tmp_path / "o" / localize.SCORES_CSV).open(newline="") as f:
    rows = list(csv.DictReader(f))
  assert [pathlib.Path(r["file"]).name for r in rows] == ["a\nb,c\".png"]
  assert output_files.csv_line(["x\ny", 1]) == '"x\ny",1'


# ------------------------------------------------------------------ files that are not files
def test_zero_byte_images_and_masks_are_named(runs, blaze, images, tmp_path, capsys):
  mixed = tmp_path / "mixed"
  shutil.copytree(images, mixed)
  (mixed / "empty.png").write_bytes(b"")
  code, err = run_cli("localize", "--workdir", blaze, "--images", mixed, "--out", tmp_path / "o",
                      "--pixel_threshold", 0.5, "--image_threshold", 0.5, capsys=capsys)
  assert code == 1 and str(mixed / "empty.png") in err, err
  code, err = run_cli("localize", "--workdir", blaze, "--images", images, "--out", tmp_path / "o",
                      "--calibrate", mixed, capsys=capsys)
  assert code == 1 and str(mixed / "empty.png") in err, err
  code, err = run_cli("generate", "--workdir", runs[0] / "flare", "--images", mixed, "--out",
                      tmp_path / "g", capsys=capsys)
  assert code == 1 and str(mixed / "empty.png") in err and "empty" in err, err

  test = tmp_path / "test"
  (test / "crack").mkdir(parents=True)
  (test / "good").mkdir()
  shutil.copy(images / "000.png", test / "crack" / "000.png")
  shutil.copy(images / "001.png", test / "good" / "001.png")
  gt = tmp_path / "gt"
  (gt / "crack").mkdir(parents=True)
  (gt / "crack" / "000_mask.png").write_bytes(b"")
  code, err = run_cli("localize", "--workdir", blaze, "--images", test, "--out", tmp_path / "m",
                      "--pixel_threshold", 0.5, "--image_threshold", 0.5, "--ground_truth", gt,
                      capsys=capsys)
  assert code == 1 and str(gt / "crack" / "000_mask.png") in err, err
  assert not any((tmp_path / name).exists() for name in ("o", "g", "m"))


def test_a_truncated_reference_file_is_named(tmp_path):
  refs = reference.References(("a", "b"), np.zeros((2, 8, 8, 3), np.float32),
                              np.ones((2, 8, 8, 3), np.float32))
  path = refs.save(tmp_path)
  path.write_bytes(path.read_bytes()[:100])
  with pytest.raises(ValueError, match=f"{path} is not a reference file"):
    reference.load(tmp_path)


@pytest.mark.parametrize("content", ["{}", "", "{not json", "[1, 2]"])
def test_a_damaged_run_config_is_named(blaze, images, tmp_path, capsys, content):
  (blaze / checkpoint.CONFIG_FILE).write_text(content)
  code, err = run_cli("localize", "--workdir", blaze, "--images", images, "--out", tmp_path / "o",
                   "--pixel_threshold", 0.5, "--image_threshold", 0.5, capsys=capsys)
  assert code == 1 and str(blaze / checkpoint.CONFIG_FILE) in err and "damaged" in err, err

"""The exported detector (af-jax export-detector) and unseen categories' references at inference.

Runs come from the session's `pidinet_runs` fixture (tests/conftest.py): PiDiNet edges, one
Blaze run without and two with `blaze.reference` (one also with `blaze.patch_guide`).
"""

import csv
import dataclasses
import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import af_jax
from af_jax import cli
from af_jax import infer
from af_jax import input_pipeline
from af_jax.evidence import patch_memory
from af_jax import pixels
from af_jax.ops import foreground
from af_jax.inference import exported_detector
from af_jax.evidence import trust
from conftest import copy_run, run_cli, subprocess_env


def _images(root, name, split="test"):
  return np.stack([np.asarray(ex["image"]) for ex in
                   input_pipeline.make_eval_dataset(root / "data", "synthetic", name, split)])


RUNS = ("blaze", "blaze_reference", "blaze_patch")


@pytest.fixture(scope="module")
def exports(pidinet_runs, tmp_path_factory):
  """{run name: export folder} of both Blaze runs, exported by the command."""
  root, _ = pidinet_runs
  out = tmp_path_factory.mktemp("exports")
  for run in RUNS:
    assert cli.main(["export-detector", "--workdir", str(root / run), "--out",
                     str(out / run)]) == 0
  return {run: out / run for run in RUNS}


def _load(folder):
  from jax import export  # pylint: disable=g-import-not-at-top
  meta = json.loads((folder / exported_detector.METADATA_FILE).read_text())
  return export.deserialize((folder / exported_detector.FUNCTION_FILE).read_bytes()), meta


def test_the_export_equals_the_detector_without_references(pidinet_runs, exports):
  root, names = pidinet_runs
  function, meta = _load(exports["blaze"])
  assert meta["size"] == 32 and meta["categories"] is None and meta["thresholds"] == {}
  images = np.concatenate([_images(root, n) for n in names])
  expected = infer.Detector(root / "blaze").localize(images)
  heatmaps, scores = function.call(images)
  assert heatmaps.shape == (len(images), 32, 32) and heatmaps.dtype == np.float32
  np.testing.assert_allclose(heatmaps, expected.heatmaps, atol=1e-4)
  np.testing.assert_allclose(scores, expected.scores, atol=1e-4)
  single, _ = function.call(images[:1])  # Any batch size: N is symbolic.
  np.testing.assert_allclose(single[0], expected.heatmaps[0], atol=1e-4)


@pytest.mark.parametrize("run", ["blaze_reference", "blaze_patch"])
def test_the_export_equals_the_detector_for_every_reference(pidinet_runs, exports, run):
  root, names = pidinet_runs
  function, meta = _load(exports[run])
  assert meta["categories"] == [f"synthetic/{n}" for n in names]
  detector = infer.Detector(root / run)
  images = _images(root, names[0])
  for index, category in enumerate(meta["categories"]):
    heatmaps, scores = function.call(images, np.full(len(images), index, np.int32))
    expected = detector.localize(images, category=category)
    assert expected.references == [category] * len(images)
    np.testing.assert_allclose(heatmaps, expected.heatmaps, atol=1e-4)
    np.testing.assert_allclose(scores, expected.scores, atol=1e-4)
  mixed = np.arange(len(images), dtype=np.int32) % len(names)  # One category per image.
  heatmaps, _ = function.call(images, mixed)
  for i, index in enumerate(mixed):
    np.testing.assert_allclose(
        heatmaps[i], detector.localize(images[i:i + 1], meta["categories"][index]).heatmaps[0],
        atol=1e-4)


def test_the_export_refuses_other_sizes_and_dtypes(exports):
  function, _ = _load(exports["blaze"])
  with pytest.raises(Exception, match="shape|32"):
    function.call(np.zeros((2, 64, 64, 3), np.uint8))
  with pytest.raises(Exception, match="uint8|float32|dtype"):
    function.call(np.zeros((2, 32, 32, 3), np.float32))


_JAX_ONLY = """
  import importlib.abc, sys
  class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
      if name.split(".")[0] in ("af_jax", "flax", "orbax", "tensorflow_datasets", "tensorflow",
                                "grain", "optax"):
        raise ImportError(f"{name} must not be needed")
  sys.meta_path.insert(0, Refuse())
  import hashlib, json, numpy as np, jax
  from jax import export
  folder, images, out = sys.argv[1:4]
  meta = json.load(open(f"{folder}/detector.json"))  # The README's check, as it shows it.
  data = open(f"{folder}/detector.stablehlo", "rb").read()
  if hashlib.sha256(data).hexdigest() != meta["sha256"]:
    raise ValueError(f"{folder}/detector.stablehlo is damaged; export it again")
  detector = export.deserialize(data)
  size = meta["size"]
  heatmaps, scores = detector.call(np.load(images))
  assert heatmaps.shape[1:] == (size, size)
  np.savez(out, heatmaps=heatmaps, scores=scores)
  assert not any(m.split(".")[0] in ("af_jax", "flax", "orbax") for m in sys.modules)
"""


def test_the_export_runs_with_jax_alone(pidinet_runs, exports, tmp_path):
  root, names = pidinet_runs
  images = _images(root, names[1])
  np.save(tmp_path / "images.npy", images)
  env = subprocess_env()
  env["PYTHONPATH"] = ""  # Not even the repository on the path.
  proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_JAX_ONLY),
                         str(exports["blaze"]), str(tmp_path / "images.npy"),
                         str(tmp_path / "out.npz")], env=env, capture_output=True, text=True,
                        timeout=300, cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  expected = infer.Detector(root / "blaze").localize(images)
  np.testing.assert_allclose(np.load(tmp_path / "out.npz")["heatmaps"], expected.heatmaps,
                             atol=1e-4)


def _damaged(folder, tmp_path, name, change):
  """A copy of the export in `folder` whose detector.stablehlo `change(bytes)` rewrote."""
  copy = tmp_path / name
  shutil.copytree(folder, copy)
  path = copy / exported_detector.FUNCTION_FILE
  path.write_bytes(change(path.read_bytes()))
  return copy


def _flip(at):
  def change(data):
    data = bytearray(data)
    index = int(at * (len(data) - 1))
    data[index] ^= 0xFF
    return bytes(data)
  return change


@pytest.mark.parametrize("name,change", [
    ("truncated", lambda data: data[:len(data) // 2]),
    ("flipped_start", _flip(0.0)), ("flipped_middle", _flip(0.5)),
    ("flipped_end", _flip(0.999)), ("empty", lambda data: b"")])
def test_a_damaged_detector_is_one_clear_error(exports, tmp_path, name, change):
  """Unchecked, these were a struct.error, a TypeError, a segfault and a detector that ran."""
  folder = _damaged(exports["blaze"], tmp_path, name, change)
  with pytest.raises(ValueError, match=r"detector\.stablehlo is damaged: .*export it again"):
    af_jax.load_detector(folder)


def test_a_detector_json_without_checksum_or_not_json_is_refused(exports, tmp_path):
  copy = tmp_path / "old"
  shutil.copytree(exports["blaze"], copy)
  meta_path = copy / exported_detector.METADATA_FILE
  meta = json.loads(meta_path.read_text())
  meta_path.write_text(json.dumps({k: v for k, v in meta.items() if k != "sha256"}))
  with pytest.raises(ValueError, match=r"detector\.json lacks sha256 .*export it again"):
    af_jax.load_detector(copy)
  meta_path.write_text(json.dumps(meta)[:-20])
  with pytest.raises(ValueError, match=r"detector\.json is damaged \(not JSON"):
    af_jax.load_detector(copy)


def test_the_loaded_detector_checks_categories_batch_and_images(pidinet_runs, exports):
  root, names = pidinet_runs
  images = _images(root, names[0])[:3]
  detector = af_jax.load_detector(exports["blaze_reference"])
  assert detector.categories == [f"synthetic/{n}" for n in names] and detector.size == 32
  raw, _ = _load(exports["blaze_reference"])
  heatmaps, scores = detector(images, 1)
  expected = raw.call(images, np.ones(len(images), np.int32))
  np.testing.assert_allclose(heatmaps, expected[0])
  np.testing.assert_allclose(scores, expected[1])
  for index in (-1, len(names), [0, 8, 1]):  # The function alone clamps them to the last one.
    with pytest.raises(ValueError, match=rf"category index (-1|{len(names)}|8) is out of range: "
                                         r".* 3 categories \(0 synthetic/"):
      detector(images, index)
  with pytest.raises(ValueError, match="needs each image's category"):
    detector(images)
  with pytest.raises(ValueError, match=r"one index per image \(3\), got 2"):
    detector(images, [0, 1])
  with pytest.raises(ValueError, match=r"takes uint8 \[N, 32, 32, 3\], got float32"):
    detector(images.astype(np.float32), 0)
  heatmaps, scores = detector(images[:0], np.zeros(0, np.int32))  # Batch 0: empty outputs.
  assert heatmaps.shape == (0, 32, 32) and scores.shape == (0,)
  plain = af_jax.load_detector(exports["blaze"])
  assert plain(images[:0])[0].shape == (0, 32, 32)
  with pytest.raises(ValueError, match="has no categories"):
    plain(images, 0)


def test_overwrite_never_replaces_a_detector_json_af_jax_did_not_write(pidinet_runs, tmp_path,
                                                                       capsys):
  root, _ = pidinet_runs
  out = tmp_path / "e"
  out.mkdir()
  (out / exported_detector.METADATA_FILE).write_text("the user's own notes")
  for extra in ((), ("--overwrite",)):
    code, err = run_cli("export-detector", "--workdir", root / "blaze", "--out", out, *extra,
                     capsys=capsys)
    error = [line for line in err.splitlines() if "error:" in line]
    assert code == 1 and len(error) == 1, err
    assert f"{out / exported_detector.METADATA_FILE} was not written by af_jax" in error[0], err
    assert (out / exported_detector.METADATA_FILE).read_text() == "the user's own notes"
    assert not (out / exported_detector.FUNCTION_FILE).exists()
  (out / exported_detector.METADATA_FILE).unlink()
  (out / "notes.txt").write_text("mine")
  for extra in ((), ("--overwrite",)):  # Its own earlier export is replaced; the rest stays.
    code, err = run_cli("export-detector", "--workdir", root / "blaze", "--out", out, *extra,
                     capsys=capsys)
    assert code == 0, err
  assert (out / "notes.txt").read_text() == "mine"
  assert af_jax.load_detector(out).size == 32


def test_export_carries_calibrated_thresholds_and_refuses_canny_runs(pidinet_runs, runs,
                                                                     tmp_path, capsys):
  root, names = pidinet_runs
  workdir = copy_run(root / "blaze", tmp_path / "blaze")
  infer.Detector(workdir).calibrate(list(_images(root, names[0], "train")), fpr=0.1,
                                    min_images=8)
  code, err = run_cli("export-detector", "--workdir", workdir, "--out", tmp_path / "e",
                   capsys=capsys)
  assert code == 0, err
  meta = json.loads((tmp_path / "e" / exported_detector.METADATA_FILE).read_text())
  saved = json.loads((workdir / infer.THRESHOLDS_FILE).read_text())["categories"]["*"]
  assert meta["thresholds"] == {"*": dict(pixel=saved["pixel"], image=saved["image"], fpr=0.1)}
  code, err = run_cli("export-detector", "--workdir", workdir, "--out", tmp_path / "e",
                   capsys=capsys)
  assert code == 1 and "already holds output" in err
  code, err = run_cli("export-detector", "--workdir", runs[0] / "blaze", "--out",
                   tmp_path / "canny", capsys=capsys)
  assert code == 1 and "'canny' edges" in err and "cannot be exported" in err, err


def test_localize_with_the_images_own_reference(pidinet_runs, tmp_path, capsys):
  """An unseen category: its own normal images are the reference, named after its folder."""
  import cv2  # pylint: disable=g-import-not-at-top
  root, names = pidinet_runs
  widget = tmp_path / "widget"
  for split, folder in (("train", "train/good"), ("test", "test/crack")):
    (widget / folder).mkdir(parents=True)
    for k, image in enumerate(_images(root, names[2], split)):
      assert cv2.imwrite(str(widget / folder / f"{k:03d}.png"), image[..., ::-1])
  code, err = run_cli("localize", "--workdir", root / "blaze_reference", "--images",
                   widget / "test", "--out", tmp_path / "loc", "--reference",
                   widget / "train" / "good", "--pixel_threshold", 0.5, "--image_threshold",
                   0.5, capsys=capsys)
  assert code == 0, err
  with (tmp_path / "loc" / "scores.csv").open(newline="") as f:
    rows = list(csv.DictReader(f))
  assert {r["reference"] for r in rows} == {"widget"} and len(rows) == 6
  summary = json.loads((tmp_path / "loc" / "summary.json").read_text())
  assert summary["references"] == {"widget": 6}
  # Without --reference each image uses its nearest trained category, and says which.
  code, err = run_cli("localize", "--workdir", root / "blaze_reference", "--images",
                   widget / "test", "--out", tmp_path / "near", "--pixel_threshold", 0.5,
                   "--image_threshold", 0.5, capsys=capsys)
  assert code == 0, err
  summary = json.loads((tmp_path / "near" / "summary.json").read_text())
  assert set(summary["references"]) <= {f"synthetic/{n}" for n in names}
  # --reference alone: the --calibrate images serve as the reference.
  code, err = run_cli("localize", "--workdir", copy_run(root / "blaze_reference", tmp_path / "r"),
                   "--images", widget / "test", "--out", tmp_path / "cal", "--calibrate",
                   widget / "train" / "good", "--min_calibration_images", 8, "--reference",
                   capsys=capsys)
  assert code == 0, err
  assert json.loads((tmp_path / "cal" / "summary.json").read_text())["references"] == {
      "widget": 6}
  code, err = run_cli("localize", "--workdir", root / "blaze", "--images", widget / "test",
                   "--out", tmp_path / "none", "--reference", widget / "train" / "good",
                   capsys=capsys)
  assert code == 1 and "trained without blaze.reference" in err, err


def test_the_patch_guide_is_the_distance_to_the_chosen_categorys_memory(pidinet_runs, tmp_path):
  root, names = pidinet_runs
  detector = infer.Detector(root / "blaze_patch")
  images = _images(root, names[1])
  edges, signed, guide = detector.network_inputs(images, category=f"synthetic/{names[1]}")
  assert guide.shape == signed.shape[:3] + (4,)
  # The network's input is searched as it was trained (every other pixel, blaze.patch_stride
  # = 2), the 8-bit images against its memory's two bfloat16 terms; the evidence weighed
  # against it, in its own memory at every pixel.
  assert detector.patch_stride == 2 and detector.evidence_patch_stride == 1
  which = np.ones(len(images), np.int32)
  expected = patch_memory.category_channel(signed, which, detector.patch_memory.arrays(), 7,
                                           stride=2, query_levels=True)
  np.testing.assert_allclose(guide[..., 3:], expected, atol=1e-5)
  np.testing.assert_allclose(guide[..., 3:], patch_memory.category_channel(
      signed, which, detector.patch_memory.arrays(), 7, stride=2), atol=0.02)  # float32's.
  evidence = patch_memory.category_channel(signed, which, detector.evidence_memory.arrays(), 7,
                                           stride=1, pixel_levels=True)
  np.testing.assert_allclose(detector.patch_evidence(signed, which, guide), evidence, atol=1e-5)
  assert not np.allclose(evidence, expected, atol=0.05)
  # Its heatmaps and image scores weigh the network with this evidence, by the category's
  # fitted trust, the scores over the object (blaze.evidence_trust).
  result = detector.localize(images, category=f"synthetic/{names[1]}")
  on = foreground.foreground_batch(pixels.uint8_to_unit(images))
  which = np.ones(len(images), int)
  maps, _ = detector.evidence_maps(images, which)
  heat, scores = trust.apply(detector.trust, maps, detector.trust_indices(which), np.asarray(on))
  np.testing.assert_allclose(result.scores, scores, atol=1e-5)
  np.testing.assert_allclose(result.heatmaps, heat, atol=1e-5)
  # A category it was not trained on gets its own memory and trust, from its normal images.
  detector.add_reference("mine", _images(root, names[0], "train"))
  assert (detector.patch_memory.names[-1] == "mine" == detector.references.names[-1]
          == detector.trust.names[-1] == detector.evidence_memory.names[-1])
  assert detector.localize(images, category="mine").references == ["mine"] * len(images)
  # A run whose two files disagree is refused, naming both.
  broken = copy_run(root / "blaze_patch", tmp_path / "broken")
  memory = patch_memory.load(broken)
  dataclasses.replace(memory, names=memory.names[::-1]).save(broken)
  with pytest.raises(ValueError, match="patch memory's categories .* differ from the "
                                       "references'"):
    infer.Detector(broken)
  broken = copy_run(root / "blaze_patch", tmp_path / "broken_evidence")
  memory = patch_memory.load(broken, patch_memory.EVIDENCE_FILE_NAME)
  dataclasses.replace(memory, names=memory.names[::-1]).save(broken,
                                                              patch_memory.EVIDENCE_FILE_NAME)
  with pytest.raises(ValueError, match="evidence memory's categories .* differ from the "
                                       "references'"):
    infer.Detector(broken)

"""Inference API: trained tiny stages restored, anomalies generated, anomalies localized.

The `runs` fixture trains Boot -> Flare -> Blaze for two steps each on the tiny synthetic set
(Canny edges, 32 px) once per test session; tests/commands/test_generate_localize_evaluate.py reuses it.
"""

import json
import shutil
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

from af_jax import checkpoint
from af_jax import infer
from af_jax.inference import thresholds
from af_jax import postprocess
from af_jax import input_pipeline
from af_jax.ops import edges
from af_jax.ops import manipulate
from af_jax import pixels
from af_jax import stage_registry

from conftest import copy_run, subprocess_env as _env


def split_images(data_dir, name, split="train", label=None):
  return [np.asarray(ex["image"]) for ex in input_pipeline.make_eval_dataset(
      data_dir, "synthetic", name, split=split) if label is None or ex["label"] == label]


@pytest.fixture(scope="module")
def generator(runs):
  return infer.Generator(runs[0] / "flare", batch_size=4)


@pytest.fixture(scope="module")
def detector(runs):
  return infer.Detector(runs[0] / "blaze", batch_size=4)


# ------------------------------------------------------------------ loading
def test_edge_method_comes_from_the_training_data(runs, generator, detector):
  assert generator.edge_method == detector.edge_method == "canny"
  assert generator.step == detector.step == 2
  config = checkpoint.load_config(runs[0] / "flare")
  assert config.data_facts.edge_method == "canny"  # Recorded from the data at training start.
  blaze = checkpoint.load_config(runs[0] / "blaze")
  blaze.blaze.reextract_edges = True
  assert stage_registry.training_edge_method(blaze) == "pidinet"


def test_other_edge_method_warns(runs):
  with pytest.warns(UserWarning, match="'pidinet' differs from the 'canny' edges"):
    detector = infer.Detector(runs[0] / "blaze", edge_method="pidinet")
  assert detector.edge_method == "pidinet"
  with pytest.raises(ValueError, match="unknown edge method 'sobel'"):
    infer.Detector(runs[0] / "blaze", edge_method="sobel")


def test_bad_workdirs_say_what_is_wrong(runs, tmp_path):
  root = runs[0]
  with pytest.raises(checkpoint.CheckpointError, match="not an af_jax training workdir"):
    infer.Generator(tmp_path)
  with pytest.raises(checkpoint.CheckpointError, match="holds a 'blaze' run, expected a 'flare'"):
    infer.Generator(root / "blaze")
  with pytest.raises(checkpoint.CheckpointError, match="holds a 'flare' run, expected a 'blaze'"):
    infer.Detector(root / "flare")
  with pytest.raises(checkpoint.CheckpointError, match=r"step 7 is not among .*\[2\]"):
    infer.Detector(root / "blaze", step=7)

  # Only an interrupted save: nothing complete to restore.
  interrupted = tmp_path / "interrupted"
  interrupted.mkdir()
  shutil.copy(root / "flare" / checkpoint.CONFIG_FILE, interrupted)
  (interrupted / checkpoint.CHECKPOINT_DIR / "2.orbax-checkpoint-tmp-9" / "generator").mkdir(
      parents=True)
  with pytest.raises(checkpoint.CheckpointError, match="no complete checkpoint"):
    infer.Generator(interrupted)

  # A step that lost its generator parameters.
  partial = copy_run(root / "flare", tmp_path / "partial")
  shutil.rmtree(partial / checkpoint.CHECKPOINT_DIR / "2" / "generator")
  with pytest.raises(checkpoint.CheckpointError, match="step 2 of .* is corrupt: its generator item folder is missing"):
    infer.Generator(partial)

  # A config that does not describe the checkpoint's model.
  mismatched = copy_run(root / "flare", tmp_path / "mismatched")
  config = json.loads((mismatched / checkpoint.CONFIG_FILE).read_text())
  config["model"]["ngf"] *= 2
  (mismatched / checkpoint.CONFIG_FILE).write_text(json.dumps(config))
  with pytest.raises(checkpoint.CheckpointError, match=r"does not match the generator its "
                     r"config.json describes .*conv_in.*is \(7, 7, 4, 8\), the model needs "
                     r"\(7, 7, 4, 16\)"):
    infer.Generator(mismatched)


# ------------------------------------------------------------------ generation
def test_generate_edits_edges_in_the_region_and_masks_follow_the_rule(runs, generator):
  _, data_dir, names = runs
  images = split_images(data_dir, names[0])[:3]
  images[1] = cv2.resize(images[1], (48, 40))  # Any size goes in; outputs are model size.
  result = generator.generate(images, n_variants=2, seed=3, mask_threshold=0.5)

  m, s = 6, generator.size
  assert result.images.shape == (m, s, s, 3) and result.images.dtype == np.uint8
  assert result.heatmaps.shape == result.edges.shape == (m, s, s)
  assert result.heatmaps.dtype == np.float32
  assert ((result.heatmaps >= 0) & (result.heatmaps <= 1)).all()
  np.testing.assert_array_equal(result.source, [0, 0, 1, 1, 2, 2])
  np.testing.assert_array_equal(result.variant, [0, 1, 0, 1, 0, 1])
  assert (result.donor != result.source).all()
  assert set(result.region_kind) <= set(manipulate.REGION_KINDS)
  assert set(result.edit_op) <= set(manipulate.EDIT_OPS)

  # Outside the edited region the edge map is the image's own (binarized) Canny map.
  own = pixels.binarize_edges(
      edges.canny_edges(pixels.resize_images(images, s)), generator.edge_threshold)[result.source]
  outside = ~result.region_masks
  np.testing.assert_array_equal(result.edges[outside], own[outside])
  assert result.region_masks.any(axis=(1, 2)).all()
  # Removal inside the region leaves no edge there.
  for j, op in enumerate(result.edit_op):
    if op == "remove":
      assert not result.edges[j][result.region_masks[j]].any()

  # Masks: heatmap >= threshold inside the region, or the region when that is empty.
  for j in range(m):
    inside = (result.heatmaps[j] >= 0.5) & result.region_masks[j]
    expected = inside if inside.any() else result.region_masks[j]
    np.testing.assert_array_equal(result.masks[j], expected)


def test_generate_same_seed_same_output_whatever_the_order(runs, generator):
  _, data_dir, names = runs
  images = split_images(data_dir, names[1])[:3]
  a = generator.generate(images, n_variants=2, seed=0)
  b = generator.generate(images, n_variants=2, seed=0)
  np.testing.assert_array_equal(a.images, b.images)
  np.testing.assert_array_equal(a.masks, b.masks)
  # Reordered images keep their ids: each anomaly is the same, at the reordered place.
  c = generator.generate(images[::-1], n_variants=2, seed=0, image_ids=[2, 1, 0])
  order = [4, 5, 2, 3, 0, 1]
  np.testing.assert_array_equal(a.images[order], c.images)
  np.testing.assert_array_equal(a.edges[order], c.edges)
  assert [a.edit_op[i] for i in order] == c.edit_op
  d = generator.generate(images, n_variants=2, seed=1)
  assert not np.array_equal(a.edges, d.edges)


def test_generate_rejects_bad_input(generator):
  with pytest.raises(ValueError, match="got no images"):
    generator.generate([])
  with pytest.raises(ValueError, match=r"image 1: expected uint8 \[H, W, 3\]"):
    generator.generate([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.float32)])
  with pytest.raises(ValueError, match="got 1 region maps for 2 images"):
    generator.generate([np.zeros((8, 8, 3), np.uint8)] * 2, regions=[np.zeros((8, 8), int)])


# ------------------------------------------------------------------ localization
def test_localize_any_size_resizes_heatmaps_back(runs, detector):
  _, data_dir, names = runs
  test = split_images(data_dir, names[0], split="test")
  s = detector.size
  images = [cv2.resize(im, (56, 72)) for im in test[:3]]  # W 56, H 72
  result = detector.localize(images)
  model_size_images = pixels.resize_images(images, s)
  at_model_size = detector.localize(model_size_images)
  assert result.heatmaps.shape == (3, 72, 56) and result.heatmaps.dtype == np.float32
  assert result.repaired.shape == (3, 72, 56, 3) and result.repaired.dtype == np.uint8
  assert at_model_size.heatmaps.shape == (3, s, s) and result.scores.shape == (3,)
  assert 0 <= result.heatmaps.min() and result.heatmaps.max() <= 1
  for heatmap, model_heat in zip(result.heatmaps, at_model_size.heatmaps):
    np.testing.assert_allclose(heatmap, cv2.resize(model_heat, (56, 72)), atol=1e-6)
  np.testing.assert_allclose(result.scores, at_model_size.scores)
  np.testing.assert_allclose(result.scores, at_model_size.heatmaps.max(axis=(1, 2)), rtol=1e-6)
  raw = infer.Detector(detector.workdir, batch_size=4, smoothing_sigma=0).localize(
      model_size_images[:1])
  np.testing.assert_allclose(at_model_size.heatmaps[0], postprocess.smooth_heatmaps(
      raw.heatmaps, detector.smoothing_sigma)[0], atol=1e-6)
  assert raw.heatmaps[0].std() > at_model_size.heatmaps[0].std()  # the blur removes speckle
  with pytest.raises(ValueError, match="got no images"):
    detector.localize([])


def test_localize_takes_one_size_per_call_and_batches_by_size_splits_a_mix(runs, detector):
  _, data_dir, names = runs
  test = split_images(data_dir, names[0], split="test")[:4]
  mixed = [test[0], cv2.resize(test[1], (20, 24)), test[2], cv2.resize(test[3], (20, 24))]
  with pytest.raises(ValueError, match=r"one size .* 4 images of sizes \(H, W\) "
                                       r"\[\(24, 20\), \(32, 32\)\]"):
    detector.localize(mixed)
  assert infer.batches_by_size(mixed) == [[0, 2], [1, 3]]
  assert infer.batches_by_size(mixed, batch_size=1) == [[0], [2], [1], [3]]
  for batch in infer.batches_by_size(mixed):
    result = detector.localize([mixed[i] for i in batch])
    alone = [detector.localize([mixed[i]]) for i in batch]
    np.testing.assert_allclose(result.heatmaps, np.concatenate([a.heatmaps for a in alone]),
                               atol=1e-6)


def test_flip_tta_averages_the_mirrored_views(runs, detector):
  _, data_dir, names = runs
  images = pixels.resize_images(split_images(data_dir, names[0], split="test")[:3], detector.size)
  tta = infer.Detector(detector.workdir, batch_size=4, smoothing_sigma=0)
  plain = infer.Detector(detector.workdir, batch_size=4, smoothing_sigma=0, flip_tta=False)
  assert tta.views() == [(False, False), (True, False), (False, True), (True, True)]
  assert plain.views() == [(False, False)]
  inputs = plain.network_inputs(images)
  views = [postprocess.flip(plain.network_outputs(*(postprocess.flip(x, lr, ud) for x in inputs))[0],
                           lr, ud)
           for lr, ud in tta.views()]
  averaged = tta.localize(images).heatmaps
  np.testing.assert_allclose(averaged, np.mean(views, axis=0), atol=1e-6)
  np.testing.assert_allclose(plain.localize(images).heatmaps, views[0], atol=1e-6)
  assert np.abs(averaged - views[0]).max() > 1e-3  # the mirrored views do change the result


def test_calibrated_thresholds_are_saved_used_and_overridden(runs, tmp_path):
  root, data_dir, names = runs
  workdir = copy_run(root / "blaze", tmp_path / "blaze")
  detector = infer.Detector(workdir, batch_size=4)
  with pytest.raises(ValueError, match="no calibrated thresholds"):
    detector.threshold("pixel")
  assert detector.threshold("image", override=0.25) == 0.25

  normal = split_images(data_dir, names[2])
  with pytest.raises(ValueError, match="at least 10 normal images, got 8"):
    detector.calibrate(normal, fpr=0.1)  # A handful says little of unseen images.
  assert detector.thresholds == {}
  saved = detector.calibrate(normal, fpr=0.1, min_images=8)[thresholds.ANY]
  assert saved["step"] == 2 and saved["edge_method"] == "canny" and saved["num_images"] == 8
  heatmaps = detector.localize(normal).heatmaps
  assert np.isclose(np.mean(heatmaps >= saved["pixel"]), 0.1, atol=0.005)

  reloaded = infer.Detector(workdir, batch_size=4)
  assert reloaded.threshold("pixel") == saved["pixel"]
  assert reloaded.threshold("image") == saved["image"]
  assert reloaded.threshold("pixel", override=0.7) == 0.7
  with pytest.warns(UserWarning):
    other_edges = infer.Detector(workdir, edge_method="pidinet")
  with pytest.raises(ValueError, match=r"calibrated with edge_method 'canny' \(now 'pidinet'\)"):
    other_edges.threshold("pixel")
  with pytest.raises(ValueError, match=r"smoothing_sigma 4.0 \(now 0\)"):
    infer.Detector(workdir, batch_size=4, smoothing_sigma=0).threshold("image")
  with pytest.raises(ValueError, match="fpr must be in"):
    detector.calibrate(normal, fpr=0, min_images=8)
  with pytest.raises(ValueError, match="at least 1 normal images, got 0"):
    detector.calibrate([], fpr=0.1, min_images=0)
  # Normal images of several sizes calibrate together (one localize call per size).
  mixed = normal[:6] + [cv2.resize(im, (40, 24)) for im in normal[6:]]
  mixed_calibration = detector.calibrate(mixed, fpr=0.1, min_images=8)
  assert mixed_calibration[thresholds.ANY]["num_images"] == 8


def test_mesh_and_dtype_give_the_single_device_result(runs, tmp_path):
  """Two CPU devices (a subprocess, since the device count is fixed at start-up)."""
  root, data_dir, names = runs
  script = """
    import sys
    import jax.numpy as jnp
    import numpy as np
    from af_jax import infer
    from af_jax import input_pipeline
    from af_jax import sharding
    import jax
    assert jax.device_count() == 2
    workdir, data_dir, name = sys.argv[1:]
    images = [np.asarray(ex["image"]) for ex in input_pipeline.make_eval_dataset(
        data_dir, "synthetic", name)][:3]
    single = infer.Detector(workdir, batch_size=2).localize(images)
    meshed = infer.Detector(workdir, batch_size=2, mesh=sharding.make_mesh()).localize(images)
    for a, b in zip(single.heatmaps, meshed.heatmaps):
      np.testing.assert_allclose(a, b, atol=1e-5)
    half = infer.Detector(workdir, batch_size=2, dtype="bfloat16")
    assert half.generator.dtype == jnp.bfloat16
    for a, b in zip(single.heatmaps, half.localize(images).heatmaps):
      np.testing.assert_allclose(a, b, atol=0.05)
    try:
      infer.Detector(workdir, batch_size=3, mesh=sharding.make_mesh())
    except ValueError as e:
      assert "multiple of the 2 devices" in str(e), e
    else:
      raise AssertionError("batch 3 on 2 devices was accepted")
  """
  env = _env()
  env["XLA_FLAGS"] += " --xla_force_host_platform_device_count=2"
  proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script), str(root / "blaze"),
                         str(data_dir), names[0]], env=env, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]


# ------------------------------------------------------------------ guide channels
def test_region_input_flare_and_reference_blaze_train_and_serve(runs, tmp_path):
  """Flare shown its edited region teaches a Blaze given each category's normal reference;
  the reference file holds the categories' own statistics and steers the detector."""
  from af_jax.evidence import reference
  from af_jax.training import train
  from tiny_config import tiny_config
  root, data_dir, names = runs
  flare = tiny_config("flare", data_dir, names, teacher=root / "boot", steps=2)
  flare.flare.region_input = True
  train.train(flare, str(tmp_path / "flare"))
  blaze = tiny_config("blaze", data_dir, names, teacher=tmp_path / "flare", steps=2)
  blaze.blaze.reference = True
  train.train(blaze, str(tmp_path / "blaze"))

  refs = reference.load(tmp_path / "blaze")
  assert refs.names == tuple(f"synthetic/{n}" for n in names)
  own = reference.Moments.of(split_images(data_dir, names[1])).statistics()
  np.testing.assert_allclose(refs.mean[1], own[0], atol=1e-6)
  np.testing.assert_allclose(refs.std[1], own[1], atol=1e-6)

  gen = infer.Generator(tmp_path / "flare", batch_size=4)
  kernel = gen.params["params"]["encoder"]["conv_in"]["kernel"]
  assert kernel.shape[2] == 1 + 3 + 1  # edges, image, edited region
  result = gen.generate(split_images(data_dir, names[0])[:2], n_variants=1, seed=0)
  assert result.images.shape == (2, 32, 32, 3)

  det = infer.Detector(tmp_path / "blaze", batch_size=4, smoothing_sigma=0)
  assert det.params["params"]["encoder"]["conv_in"]["kernel"].shape[2] == 1 + 3 + 3
  images = split_images(data_dir, names[0], split="test")[:3]
  np.testing.assert_array_equal(refs.nearest(np.stack(images)), [0, 0, 0])
  own_ref = det.localize(images).heatmaps
  np.testing.assert_array_equal(own_ref, det.localize(images, names[0]).heatmaps)
  other_ref = det.localize(images, names[1]).heatmaps
  assert np.abs(own_ref - other_ref).max() > 1e-4
  # A category the run never saw gets its own reference from normal images of any size.
  unseen = [np.ascontiguousarray(np.rot90(im)) for im in split_images(data_dir, names[2])]
  det.add_reference("rotated", [cv2.resize(im, (48, 48)) for im in unseen])
  assert det.references.names[-1] == "rotated"
  np.testing.assert_array_equal(det.references.nearest(np.stack(unseen[:2])), [3, 3])
  assert np.abs(det.localize(unseen[:2], "rotated").heatmaps
                - det.localize(unseen[:2], names[2]).heatmaps).max() > 1e-4
  with pytest.raises(ValueError, match="trained without blaze.reference"):
    infer.Detector(root / "blaze").add_reference("x", unseen)
  (tmp_path / "blaze" / reference.FILE_NAME).unlink()
  with pytest.raises(FileNotFoundError, match="reference_statistics.npz is missing"):
    infer.Detector(tmp_path / "blaze")


def test_generation_changes_nothing_outside_the_edited_region_unless_unbounded(runs, generator):
  _, data_dir, names = runs
  images = pixels.resize_images(split_images(data_dir, names[0])[:3], generator.size)
  assert not generator.bound_to_region  # The run's config: the paper's default.
  bounded = infer.Generator(generator.workdir, batch_size=4, bound_to_region=True).generate(
      images, n_variants=2, seed=3)
  outside = ~bounded.region_masks
  np.testing.assert_array_equal(bounded.images[outside], images[bounded.source][outside])
  assert not bounded.heatmaps[outside].any()
  free = generator.generate(images, n_variants=2, seed=3)
  np.testing.assert_array_equal(free.region_masks, bounded.region_masks)
  assert np.abs(free.images[outside].astype(int) - images[free.source][outside]).max() > 0

"""Fused image scores (`blaze.image_score = 'fused'`): the formula, the statistics and their file.

The trained run is the session's `pidinet_runs` `blaze_patch` (tests/conftest.py), whose
statistics training's end fitted; real MVTec AD bottle images give a category it never saw.
"""

import dataclasses

import numpy as np
import pytest

from af_jax import infer
from af_jax import pixels
from af_jax.evidence import reference
from af_jax import stage_registry
from af_jax.evidence import score_fusion
from af_jax.configs import common
from conftest import copy_run


def test_scores_count_standard_deviations_above_the_normal_images():
  raw = np.asarray([[0.2, 0.5], [0.4, 0.5], [0.2, 0.9]])
  mean, std = np.asarray([[0.2, 0.5]] * 3), np.asarray([[0.1, 0.2]] * 3)
  scores = score_fusion.fuse(raw, mean, std)
  # A typical normal image is at 0.5; +2 std of heatmap alone = +1 on average: sigmoid(1).
  np.testing.assert_allclose(scores, [0.5, 1 / (1 + np.exp(-1.0)), 1 / (1 + np.exp(-1.0))])
  with pytest.raises(ValueError, match="bottle: image score statistics need at least 2"):
    score_fusion.ScoreStatistics.of("bottle", raw[:1])


def test_the_trained_run_fitted_its_categories_statistics(pidinet_runs):
  root, _ = pidinet_runs
  detector = infer.Detector(root / "blaze_patch")
  stats = detector.score_statistics
  assert stats.names == detector.references.names
  assert stats.mean.shape == stats.std.shape == (len(stats.names), 2)
  assert np.all(stats.std >= score_fusion.MIN_STD) and np.all(np.isfinite(stats.mean))


def test_real_normal_images_are_scored_as_unseen_ones(pidinet_runs, bottle_dir):
  """Leave-one-out: the reference part of the statistics is each normal image's deviation from
  the reference of the others, larger than its deviation from a reference that holds it."""
  root, _ = pidinet_runs
  detector = infer.Detector(root / "blaze_patch")
  paths = sorted((bottle_dir / "train" / "good").glob("*.png"))[:12]
  normal = np.stack([pixels.resize_image(pixels.read_rgb(p), 32) for p in paths])
  detector.add_reference("bottle", normal)
  fitted = detector.score_statistics
  assert fitted.names[-1] == "bottle"
  on = detector.scored_pixels(normal)
  eps = detector.config.blaze.reference_eps
  moments = reference.Moments.of(normal)
  signed = pixels.uint8_to_signed(normal)

  def reference_maxima(mean_std):
    guide = reference.network_channels(signed, mean_std, eps)
    return np.where(on, score_fusion.reference_maps(guide), 0).max((1, 2))

  left_out = reference_maxima(np.stack([moments.leave_one_out(im) for im in normal]))
  in_sample = reference_maxima(np.concatenate(moments.statistics(), -1))
  np.testing.assert_allclose(fitted.mean[-1, 1], left_out.mean(), rtol=1e-4)
  np.testing.assert_allclose(fitted.std[-1, 1], left_out.std(), rtol=1e-3)
  assert left_out.mean() > in_sample.mean() + 0.01, (left_out.mean(), in_sample.mean())


def test_the_statistics_file_round_trips_and_damage_is_named(pidinet_runs, tmp_path):
  root, _ = pidinet_runs
  run = copy_run(root / "blaze_patch", tmp_path / "run")
  stats = score_fusion.load(run)
  extra = score_fusion.ScoreStatistics.of("extra", np.asarray([[0.1, 0.2], [0.3, 0.6]]))
  merged = stats.merged(extra)
  assert merged.names == stats.names + ("extra",)
  np.testing.assert_allclose(merged.std[-1], [0.1, 0.2], rtol=1e-6)
  dataclasses.replace(stats, names=stats.names[::-1]).save(run)
  with pytest.raises(ValueError, match="image score statistics' categories .* differ from "
                                       "the references'"):
    infer.Detector(run)
  (run / score_fusion.FILE_NAME).write_bytes(b"not a zip")
  with pytest.raises(ValueError, match="score_statistics.npz is not an image score "
                                       "statistics file"):
    infer.Detector(run)
  (run / score_fusion.FILE_NAME).unlink()
  with pytest.raises(FileNotFoundError, match="blaze.image_score='fused'"):
    infer.Detector(run)


def test_config_checks():
  config = common.get_config("blaze")
  config.blaze.image_score = "mean"
  with pytest.raises(ValueError, match="blaze.image_score must be 'heatmap' or 'fused'"):
    stage_registry.check_config(config)
  config.blaze.image_score = "fused"
  with pytest.raises(ValueError, match="blaze.image_score='fused' needs blaze.reference"):
    stage_registry.check_config(config)
  config.blaze.reference = True
  stage_registry.check_config(config)

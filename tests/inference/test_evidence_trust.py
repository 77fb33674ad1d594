"""A detector that keeps its evidence (`blaze.evidence_trust`): the fit from generated anomalies
and leave-one-out normals, a new part's fit, the evidence block, and the errors a user meets.

The trained run is the session's `pidinet_runs` `blaze_patch` (tests/conftest.py), whose trust
training's end fitted; real MVTec AD bottle images give a part it never saw.
"""

import dataclasses
import json

import numpy as np
import pytest

from af_jax import infer
from af_jax import pixels
from af_jax.commands import evaluate
from af_jax.evidence import reference
from af_jax.evidence import trust as trust_lib
from conftest import copy_run


def _bottle(bottle_dir, split="train/good", count=8, size=32):
  paths = sorted((bottle_dir / split).glob("*.png"))[:count]
  return np.stack([pixels.resize_image(pixels.read_rgb(p), size) for p in paths])


def test_the_trained_run_fitted_each_category_it_saw(pidinet_runs):
  root, _ = pidinet_runs
  detector = infer.Detector(root / "blaze_patch")
  trust = detector.trust
  assert trust.names == detector.references.names
  np.testing.assert_allclose(trust.weights.sum(1), 1.0, atol=1e-5)
  assert np.all(trust.weights >= 0)
  assert set(np.round(trust.sigma.ravel() * 64 / detector.size, 4)) <= {0.0, 1.0, 2.0, 4.0}
  # The network alone is on the grid at no cost: the chosen mix never ranks worse than it.
  assert np.all(trust.fit_quality[:, 3] >= trust.fit_quality[:, 0] - 1e-6)


def test_a_new_part_is_fitted_from_anomalies_of_its_leave_one_out_normals(pidinet_runs,
                                                                         bottle_dir):
  root, _ = pidinet_runs
  detector = infer.Detector(root / "blaze_patch")
  normal = _bottle(bottle_dir)
  detector.add_reference("bottle", normal)
  assert detector.trust.names[-1] == "bottle" == detector.references.names[-1]
  fitted = detector.trust.row("bottle")
  assert sum(fitted["weights"].values()) == pytest.approx(1.0, abs=1e-5)
  # The normal statistics come from images left out of the reference they are compared with:
  # their reference evidence is larger than against a reference that holds them.
  moments = reference.Moments.of(normal)
  scored = trust_lib.fit_indices(len(normal), detector.trust_images)  # Those the fit scores.
  which = np.full(len(scored), detector.references.index("bottle"))
  left_out = (np.stack([moments.leave_one_out(im) for im in normal[scored]]), scored)
  loo_maps, _ = detector.evidence_maps(normal[scored], which, left_out)
  in_sample_maps, _ = detector.evidence_maps(normal[scored], which)
  source = trust_lib.SOURCES.index("reference")
  row = detector.trust.index("bottle")
  np.testing.assert_allclose(detector.trust.source_mean[row, source],
                             loo_maps[..., source].mean(), rtol=1e-3)
  assert loo_maps[..., source].mean() > in_sample_maps[..., source].mean() + 0.01
  # Anomalies made from them rank above them (the fitted objective). Scores are in (0, 1),
  # and the images the reference holds score below unseen ones.
  assert detector.trust.fit_quality[row, 3] > 0.5
  unseen = detector.localize(_bottle(bottle_dir, "test/good", 12), category="bottle").scores
  held = detector.localize(normal, category="bottle").scores
  assert np.all((unseen > 0) & (unseen < 1))
  assert np.median(held) < np.median(unseen)


def test_the_evidence_block_scores_each_source_alone(pidinet_runs, bottle_dir):
  root, _ = pidinet_runs
  detector = infer.Detector(root / "blaze_patch")
  detector.add_reference("bottle", _bottle(bottle_dir))
  images = [*_bottle(bottle_dir, "test/good", 3), *_bottle(bottle_dir, "test/broken_large", 3)]
  masks = [np.zeros((32, 32), bool)] * 3 + [
      pixels.resize_labels(pixels.read_mask(p).astype(np.uint8), 32) > 0
      for p in sorted((bottle_dir / "ground_truth" / "broken_large").glob("*.png"))[:3]]
  test = evaluate.TestSet("", "folder", "bottle", images, masks, [0] * 3 + [1] * 3)
  evidence, computed = {}, []
  evidence_maps = detector.evidence_maps
  detector.evidence_maps = lambda *a, **k: computed.append(1) or evidence_maps(*a, **k)
  metrics = evaluate.score_with_evidence(detector, test, evidence, "bottle")
  assert len(computed) == 1  # One batch's maps, shared by the detector and its three sources.
  # Scored from the shared maps, the detector is what its own localize gives.
  assert metrics == evaluate.score(evaluate.WithReference(detector, "bottle"), test)
  block = evidence["bottle"]
  assert set(block) == {*trust_lib.SOURCES, "trust", "keeps_evidence"}
  for source in trust_lib.SOURCES:
    assert 0.0 <= block[source]["pixel_auroc"] <= 1.0 and block[source]["num_images"] == 6
  assert block["keeps_evidence"] == evaluate.keeps_evidence(metrics, block)
  header, rows = evaluate.comparison_rows(dict(per_category={"bottle": metrics},
                                               mean=metrics, evidence=evidence))
  assert header[-1] == "keeps its evidence"
  assert [r[1] for r in rows[:4]] == [evaluate.DETECTOR, *evaluate.EVIDENCE_TITLES.values()]


def test_too_few_normal_images_and_a_missing_flare_run_are_one_error_naming_the_part(
    pidinet_runs, bottle_dir, tmp_path):
  root, _ = pidinet_runs
  detector = infer.Detector(root / "blaze_patch")
  with pytest.raises(ValueError, match="bottle: fitting its evidence trust needs at least 4 "
                                       "normal images, got 3"):
    detector.add_reference("bottle", _bottle(bottle_dir, count=3))
  run = copy_run(root / "blaze_patch", tmp_path / "run")
  detector = infer.Detector(run, flare_workdir=tmp_path / "no_flare_here")
  with pytest.raises(ValueError, match="bottle: its evidence trust is fitted from "
                                       "FlareGenerator anomalies, but the Flare run"):
    detector.add_reference("bottle", _bottle(bottle_dir))


def test_the_trust_file_must_match_the_references(pidinet_runs, tmp_path):
  root, _ = pidinet_runs
  run = copy_run(root / "blaze_patch", tmp_path / "run")
  trust = trust_lib.load(run)
  trust_lib.Trust(trust.names[::-1], *(getattr(trust, a) for a in trust_lib.ARRAYS)).save(run)
  with pytest.raises(ValueError, match="evidence trust's categories .* differ from the "
                                       "references'"):
    infer.Detector(run)
  (run / trust_lib.FILE_NAME).unlink()
  with pytest.raises(FileNotFoundError, match="blaze.evidence_trust"):
    infer.Detector(run)


def test_the_views_are_the_ones_the_trust_was_fitted_with(pidinet_runs, tmp_path):
  """The trust's statistics hold for the views it averaged: a detector takes those by
  default and refuses the other choice, naming the run and both ways out."""
  root, _ = pidinet_runs
  run = copy_run(root / "blaze_patch", tmp_path / "run")
  assert infer.Detector(run).flip_tta and len(infer.Detector(run).views()) == 4
  with pytest.raises(ValueError, match=rf"{run}: its evidence trust was fitted with the "
                                       r"flipped views.*drop --no-flip_tta.*"
                                       r"blaze.flip_views=False"):
    infer.Detector(run, flip_tta=False)
  trust = trust_lib.load(run)
  dataclasses.replace(trust, flip_views=np.zeros_like(trust.flip_views)).save(run)
  assert infer.Detector(run).views() == [(False, False)]
  with pytest.raises(ValueError, match="fitted without the flipped views.*--flip_tta"):
    infer.Detector(run, flip_tta=True)
  dataclasses.replace(trust, flip_views=np.arange(len(trust.names)) == 0).save(run)
  with pytest.raises(ValueError, match="for some categories and without them for others"):
    infer.Detector(run)


def test_a_run_that_chose_one_view_fits_its_trust_on_one_view(pidinet_runs, bottle_dir,
                                                              tmp_path):
  root, _ = pidinet_runs
  run = copy_run(root / "blaze_patch", tmp_path / "run")
  config = json.loads((run / "config.json").read_text())
  config["blaze"]["flip_views"] = False
  (run / "config.json").write_text(json.dumps(config))
  detector = infer.Detector(run, trust=trust_lib.EMPTY)  # As training's end fits it.
  assert detector.views() == [(False, False)]
  detector.add_reference("bottle", _bottle(bottle_dir))
  assert detector.trust.names == ("bottle",) and detector.trust.flip_views.tolist() == [False]


def test_a_run_stopped_during_its_trust_fit_is_not_taken_as_done(pidinet_runs, tmp_path):
  from af_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from af_jax.commands import demo  # pylint: disable=g-import-not-at-top
  root, _ = pidinet_runs
  run = copy_run(root / "blaze_patch", tmp_path / "run")
  config = checkpoint.load_config(run)
  assert demo._stage_done(run, config)  # pylint: disable=protected-access
  (run / trust_lib.FILE_NAME).unlink()
  assert not demo._stage_done(run, config)  # pylint: disable=protected-access

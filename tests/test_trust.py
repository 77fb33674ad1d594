"""Evidence trust (af_jax/evidence/trust.py): the fit's rules on made-up evidence, and its file."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from af_jax.evidence import trust

SIGMAS = (0.0, 1.0, 2.0)


def _evidence(seed=0, k=8, m=8, size=32):
  """Normal and anomalous evidence maps [.., size, size, 3]: `network` rises a little inside
  each anomaly's square, `patch` much more, `reference` falls there."""
  rng = np.random.default_rng(seed)
  normal = rng.normal(size=(k, size, size, 3))
  anomalous = rng.normal(size=(m, size, size, 3))
  masks = np.zeros((m, size, size), bool)
  for i in range(m):
    y, x = rng.integers(0, size - 6, 2)
    masks[i, y:y + 6, x:x + 6] = True
  anomalous[..., 0] += 0.5 * masks
  anomalous[..., 1] += 3.0 * masks
  anomalous[..., 2] -= 3.0 * masks
  return normal, anomalous, masks


def test_the_fit_trusts_what_ranks_the_anomalies_and_nothing_that_does_not():
  normal, anomalous, masks = _evidence()
  fitted = trust.fit("part", normal, anomalous, masks, SIGMAS, network_prior=0.0)
  weights = dict(zip(trust.SOURCES, fitted.weights[0]))
  assert weights["reference"] == 0.0        # Ranks the anomalies below normal pixels.
  assert weights["patch"] >= 0.8            # The one source that sees them.
  np.testing.assert_allclose(fitted.weights.sum(), 1.0, atol=1e-6)
  quality = dict(zip((*trust.SOURCES, "detector"), fitted.fit_quality[0]))
  assert quality["detector"] >= quality["patch"] > 0.9 > quality["network"]
  assert set(fitted.sigma[0]) <= set(SIGMAS)


def test_evidence_must_earn_its_weight_off_the_network():
  normal, anomalous, masks = _evidence()
  anomalous[..., 0] += 2.5 * masks  # Now the network sees the anomalies about as well.
  free = trust.fit("part", normal, anomalous, masks, SIGMAS, network_prior=0.0)
  held = trust.fit("part", normal, anomalous, masks, SIGMAS, network_prior=0.05)
  assert held.weights[0, 0] > free.weights[0, 0] or held.weights[0, 0] == 1.0
  assert held.weights[0, 0] >= 0.8


def test_shrinkage_pulls_the_weights_toward_equal_trust_in_the_sources_above_chance():
  normal, anomalous, masks = _evidence()
  fitted = {s: trust.fit("part", normal, anomalous, masks, SIGMAS, network_prior=0.0,
                         shrinkage=s) for s in (0.0, 0.5, 1.0)}
  above = fitted[0.0].fit_quality[0, :3] > 0.5
  assert above[1] and not above[2]          # The reference ranks the anomalies below normal.
  np.testing.assert_allclose(fitted[1.0].weights[0], above / above.sum(), atol=1e-6)
  np.testing.assert_allclose(fitted[0.5].weights[0],
                             (fitted[0.0].weights[0] + fitted[1.0].weights[0]) / 2, atol=1e-6)


def test_the_image_score_weighs_what_ranks_whole_images_best():
  """Normal images with one bright speck each in the patch evidence: it still ranks pixels
  well, but its maxima no longer tell anomalous images from normal ones; the network's do."""
  normal, anomalous, masks = _evidence(k=16, m=16)
  normal[:, 4:7, 4:7, 1] += 10.0
  anomalous[..., 0] += 0.5 * masks
  fitted = trust.fit("part", normal, anomalous, masks, SIGMAS, shrinkage=0.5)
  assert fitted.weights[0, 1] > 0.2                                # Pixels: both sources.
  assert fitted.image_weights[0, 0] > fitted.weights[0, 0]         # Images: more network.
  np.testing.assert_allclose(fitted.image_weights.sum(), 1.0, atol=1e-6)
  which = np.zeros(len(normal), int)

  def image_auroc(t):
    return trust._image_auroc(trust.apply(t, anomalous, which)[1], trust.apply(t, normal, which)[1])

  assert image_auroc(fitted) > 0.9
  assert image_auroc(dataclasses.replace(fitted, image_weights=fitted.weights)) < 0.5


def test_image_weights_hedge_among_the_mixes_the_few_images_cannot_tell_apart():
  """Network and patch evidence both put every anomalous image above every normal one: the
  image score weighs them alike instead of betting on one."""
  normal, anomalous, masks = _evidence(k=16, m=16)
  anomalous[..., 0] += 3.0 * masks
  fitted = trust.fit("part", normal, anomalous, masks, SIGMAS, shrinkage=0.5)
  np.testing.assert_allclose(fitted.image_weights[0], [0.5, 0.5, 0.0], atol=1e-6)
  assert trust._auroc_standard_error(1.0, 16, 16) == 0.0
  # Hanley and McNeil's error of an AUROC of 0.9 on 16 and 16: about 0.058.
  np.testing.assert_allclose(trust._auroc_standard_error(0.9, 16, 16), 0.0577, atol=5e-4)


def test_a_missing_source_gets_no_weight_even_when_it_would_rank_well():
  normal, anomalous, masks = _evidence()
  fitted = trust.fit("part", normal, anomalous, masks, SIGMAS, available=(True, False, True))
  np.testing.assert_array_equal(fitted.weights[0], [1.0, 0.0, 0.0])


def test_normal_images_score_near_one_half_and_numpy_and_jax_agree():
  normal, anomalous, masks = _evidence(seed=1)
  fitted = trust.fit("part", normal, anomalous, masks, SIGMAS)
  which = np.zeros(len(normal), int)
  heat, scores = trust.apply(fitted, normal, which)
  assert 0.3 < np.median(scores) < 0.7
  _, anomalous_scores = trust.apply(fitted, anomalous, np.zeros(len(anomalous), int))
  assert anomalous_scores.min() > np.median(scores)
  heat_j, scores_j = trust.apply(fitted, jnp.asarray(normal, jnp.float32), jnp.asarray(which))
  np.testing.assert_allclose(np.asarray(heat_j), heat, atol=1e-4)
  np.testing.assert_allclose(np.asarray(scores_j), scores, atol=1e-4)


def test_too_few_normal_images_and_no_usable_evidence_are_named_errors():
  normal, anomalous, masks = _evidence(k=3)
  with pytest.raises(ValueError, match=r"widget: fitting its evidence trust needs at least 4"):
    trust.fit("widget", normal, anomalous, masks, SIGMAS)
  normal, anomalous, masks = _evidence()
  with pytest.raises(ValueError, match=r"widget: none of the anomalies"):
    trust.fit("widget", normal, anomalous, np.zeros_like(masks), SIGMAS)
  with pytest.raises(ValueError, match=r"widget: no evidence source ranks"):
    trust.fit("widget", normal, anomalous, masks, SIGMAS, available=(False, False, True))


def test_the_trust_file_round_trips_merges_by_name_and_damage_is_named(tmp_path):
  normal, anomalous, masks = _evidence()
  a = trust.fit("a", normal, anomalous, masks, SIGMAS)
  b = trust.fit("b", normal[::-1], anomalous, masks, SIGMAS)
  both = trust.EMPTY.merged(a).merged(b).merged(a)
  assert both.names == ("b", "a")
  both.save(tmp_path)
  loaded = trust.load(tmp_path)
  assert loaded.names == both.names
  for name in trust.ARRAYS:
    np.testing.assert_array_equal(getattr(loaded, name), getattr(both, name))
  # A file fitted before the image score had its own weights scores images as its heatmap;
  # one fitted before the views were recorded averaged the flipped ones (all fits did).
  assert both.flip_views.tolist() == [True, True]
  older = {name: getattr(both, name) for name in trust.ARRAYS
           if name not in ("image_weights", "flip_views")}
  np.savez(tmp_path / trust.FILE_NAME, names=np.asarray(both.names), **older)
  np.testing.assert_array_equal(trust.load(tmp_path).image_weights, both.weights)
  np.testing.assert_array_equal(trust.load(tmp_path).flip_views, [True, True])
  (tmp_path / trust.FILE_NAME).write_bytes(b"not a zip")
  with pytest.raises(ValueError, match=trust.FILE_NAME):
    trust.load(tmp_path)

"""IS and IC-LPIPS: parity with torch-fidelity and lpips, the metrics' definitions, the CLI.

The parity tests re-draw the reference run's weights with the recipe of
../shared/fixtures/README.md, load them through the public loaders and compare every output
with what the real torch-fidelity Inception and lpips LPIPS-VGG computed on 20 real bottle
images. The compiled functions are shared: every 128 px call uses batches of BATCH images.
"""

import json
import pathlib

import cv2
import jax
import numpy as np
import pytest

from af_jax.commands import convert_weights
from af_jax.commands import evaluate_generation
from af_jax.metrics import generation
from af_jax.models import inception as inception_lib
from af_jax.models import lpips as lpips_lib
from torch_files import write_torch_legacy

BATCH = 4


def draw_state(layout_json, seed: int, prefix: str = "") -> dict[str, np.ndarray]:
  """The fixture README's recipe: one draw per tensor, in layout order."""
  rng = np.random.default_rng(seed)
  state = {}
  for key, shape in json.loads(str(layout_json)):
    if not key.startswith(prefix):
      continue
    shape = tuple(shape)
    if key.endswith("num_batches_tracked"):
      state[key] = np.zeros(shape, np.int64)
      continue
    if key.endswith("running_var"):
      value = rng.uniform(0.5, 1.5, shape)
    elif key.endswith("running_mean"):
      value = rng.standard_normal(shape) * 0.1
    elif len(shape) >= 2:
      value = rng.standard_normal(shape) * np.sqrt(2 / np.prod(shape[1:]))
    elif key.endswith(".weight"):
      value = rng.uniform(0.8, 1.2, shape)
    else:
      value = rng.standard_normal(shape) * 0.05
    state[key] = np.asarray(value, np.float32)
  return state


@pytest.fixture(scope="module")
def ref(genmetrics_ref):
  with np.load(genmetrics_ref) as npz:
    return {key: npz[key] for key in npz.files}


@pytest.fixture(scope="module")
def inception_state(ref):
  return draw_state(ref["inception_state_dict_layout"], int(ref["seed"]))


@pytest.fixture(scope="module")
def backbone_state(ref):
  """The LPIPS backbone only (`net.*`): the heads must come from the shipped file."""
  return draw_state(ref["lpips_state_dict_layout"], int(ref["seed"]) + 1, prefix="net.")


@pytest.fixture(scope="module")
def inception_model(inception_state):
  return generation.load_inception(inception_state, batch_size=BATCH)


@pytest.fixture(scope="module")
def lpips_model(backbone_state):
  return generation.load_lpips(backbone_state, batch_size=BATCH)


def torchvision_names(backbone: dict) -> dict:
  """lpips' `net.sliceK.N.weight` -> torchvision's `features.N.weight`."""
  return {f"features.{k.split('.')[2]}.{k.split('.')[3]}": v for k, v in backbone.items()}


def small(images: np.ndarray, size: int) -> np.ndarray:
  return np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in images])


# ------------------------------------------------------------------ parity
def test_inception_matches_torch_fidelity(ref, inception_model):
  images = ref["images"]
  resized = np.asarray(inception_lib.resize_like_tf1(images[:2].astype(np.float32)))
  np.testing.assert_allclose(resized, ref["inception_resized_299"].transpose(0, 2, 3, 1),
                             rtol=0, atol=1e-4)
  features = generation.inception_features(inception_model, images)
  np.testing.assert_allclose(features["pool"], ref["inception_pool_2048"], rtol=0, atol=1e-4)
  np.testing.assert_allclose(features["logits_unbiased"], ref["inception_logits_unbiased"],
                             rtol=0, atol=1e-4)
  mean, std = generation.inception_score(features["logits_unbiased"],
                                         int(ref["inception_is_splits"]), shuffle_seed=None)
  assert mean == pytest.approx(float(ref["inception_score_mean"]), abs=1e-6)
  assert std == pytest.approx(float(ref["inception_score_std"]), abs=1e-6)


def test_lpips_matches_the_lpips_package(ref, lpips_model):
  images, want = ref["images"], ref["lpips_distances"]
  # Every pair, through the set-to-set path IC-LPIPS uses.
  np.testing.assert_allclose(generation.lpips_matrix(lpips_model, images, images), want,
                             rtol=0, atol=1e-4)
  # The pairwise path on eight pairs, each image once.
  a, b = np.arange(0, 16, 2), np.arange(1, 16, 2)
  np.testing.assert_allclose(generation.lpips(lpips_model, images[a], images[b]), want[a, b],
                             rtol=0, atol=1e-4)


def test_the_shipped_heads_are_the_lpips_packages(ref):
  shipped = generation.shipped_lpips_heads()
  assert sorted(shipped) == sorted(k for k in lpips_lib.torch_keys() if not k.startswith("net."))
  for key, value in shipped.items():
    np.testing.assert_array_equal(value, ref[f"lpips_head/{key}"], err_msg=key)


# ------------------------------------------------------------------ definitions
def test_lpips_of_an_image_with_itself_is_zero_and_lpips_is_symmetric(ref, lpips_model):
  images = small(ref["images"][:8], 16)
  np.testing.assert_array_equal(generation.lpips(lpips_model, images, images), 0.0)
  forward = generation.lpips(lpips_model, images[:4], images[4:])
  np.testing.assert_array_equal(forward, generation.lpips(lpips_model, images[4:], images[:4]))
  assert np.all(forward > 0)


def test_inception_score_of_identical_predictions_is_one_and_of_k_classes_is_k():
  rng = np.random.default_rng(0)
  same = np.repeat(rng.normal(size=(1, 1008)), 40, axis=0)
  assert generation.inception_score(same)[0] == pytest.approx(1.0, abs=1e-12)
  for k in (2, 5):
    confident = np.zeros((10 * k, 1008))
    confident[np.arange(10 * k), np.arange(10 * k) % k] = 60.0  # each split: k classes once
    mean, std = generation.inception_score(confident, 10, shuffle_seed=None)
    assert mean == pytest.approx(k, rel=1e-9) and std == pytest.approx(0, abs=1e-9)
    assert generation.inception_score(confident, 1)[0] == pytest.approx(k, rel=1e-9)
  with pytest.raises(ValueError, match="cannot use 10 splits"):
    generation.inception_score(same[:9])


def test_ic_lpips_follows_the_clustering_protocol(ref, lpips_model):
  real = small(ref["images"][:4], 16)
  rng = np.random.default_rng(0)
  noise = lambda i: np.clip(real[i].astype(int) + rng.integers(-3, 4, real[i].shape), 0, 255)
  # Near-copies of real images join their cluster: 0 gets five (one over the cap of 4),
  # 1 gets two, 2 gets one (a singleton), 3 none.
  centre = [0, 1, 0, 0, 2, 0, 1, 0]
  generated = np.stack([noise(c) for c in centre]).astype(np.uint8)
  result = generation.ic_lpips(lpips_model, generated, real, max_per_cluster=4,
                               subsets={"odd": [1, 3, 5, 7]})
  np.testing.assert_array_equal(generation.nearest_real(lpips_model, generated, real)[0], centre)
  np.testing.assert_array_equal(result.cluster_sizes, [4, 2, 1, 0])

  def mean_pairwise(members):
    a, b = np.triu_indices(len(members), 1)
    idx = np.asarray(members)
    return generation.lpips(lpips_model, generated[idx[a]], generated[idx[b]]).mean()

  expected = [mean_pairwise([0, 2, 3, 5]), mean_pairwise([1, 6]), 0.0, 0.0]  # 7 left out
  np.testing.assert_allclose(result.cluster_lpips, expected, rtol=0, atol=1e-6)
  assert result.value == pytest.approx(np.mean(expected), abs=1e-6)
  assert result.populated == pytest.approx(np.mean(expected[:2]), abs=1e-6)
  odd = result.subsets["odd"]  # 1 -> cluster 1, 3, 5, 7 -> cluster 0
  np.testing.assert_array_equal(odd.cluster_sizes, [3, 1, 0, 0])
  assert odd.value == pytest.approx(mean_pairwise([3, 5, 7]) / 4, abs=1e-6)


# ------------------------------------------------------------------ loading
def test_loaders_name_the_missing_or_misshaped_key(inception_state, backbone_state):
  broken = {k: v for k, v in inception_state.items() if k != "Mixed_6c.branch7x7_2.conv.weight"}
  with pytest.raises(ValueError, match=r"missing key 'Mixed_6c\.branch7x7_2\.conv\.weight' "
                                       r"\(expected shape \(160, 160, 1, 7\)\)"):
    generation.load_inception(broken)
  wrong = dict(inception_state, **{"fc.weight": np.zeros((1000, 2048), np.float32)})
  with pytest.raises(ValueError, match=r"'fc\.weight' has shape \(1000, 2048\), expected "
                                       r"\(1008, 2048\)"):
    generation.load_inception(wrong)
  torchvision = torchvision_names(backbone_state)
  del torchvision["features.28.bias"]
  with pytest.raises(ValueError, match=r"missing key 'features\.28\.bias' \(expected shape "
                                       r"\(512,\)\)"):
    generation.load_lpips(torchvision)
  with pytest.raises(ValueError, match=r"'lin2\.model\.1\.weight' has shape \(1, 64, 1, 1\)"):
    generation.load_lpips(dict(backbone_state, **{"lin2.model.1.weight": np.ones((1, 64, 1, 1))}))


def test_torchvision_and_lpips_backbone_names_give_the_same_model(backbone_state, lpips_model):
  other = generation.load_lpips(torchvision_names(backbone_state))
  same = jax.tree.map(np.array_equal, other.variables, lpips_model.variables)
  assert all(jax.tree.leaves(same))


# ------------------------------------------------------------------ command line
def test_evaluate_generation_refuses_without_weights(tmp_path, capsys):
  for argv, flag in (([], "--inception"), (["--metrics", "ic_lpips"], "--lpips"),
                     (["--metrics", "ic_lpips", "--lpips", "x.npz"], "--real")):
    with pytest.raises(SystemExit) as exit_info:
      evaluate_generation.main(["--generated", str(tmp_path), *argv])
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err


def _write_generated(root: pathlib.Path, images: np.ndarray, ops: list[str]) -> None:
  folder = root / "bottle" / "images"
  folder.mkdir(parents=True)
  with (root / "bottle" / "manifest.jsonl").open("w") as manifest:
    for i, (image, op) in enumerate(zip(images, ops)):
      cv2.imwrite(str(folder / f"{i:03d}.png"), image[..., ::-1])
      manifest.write(json.dumps({"image": f"images/{i:03d}.png", "edit_op": op,
                                 "region_kind": "semantic"}) + "\n")


def test_evaluate_generation_end_to_end(ref, inception_state, backbone_state, tmp_path, capsys):
  # The user's path: torchvision-named VGG16 in a legacy .pth -> convert-weights -> .npz.
  vgg_pth = tmp_path / "vgg16.pth"
  write_torch_legacy(vgg_pth, torchvision_names(backbone_state))
  assert convert_weights.main([str(vgg_pth), str(tmp_path / "vgg16.npz"), "--model", "lpips"]) == 0
  np.savez(tmp_path / "inception.npz", **inception_state)
  images = ref["images"]
  _write_generated(tmp_path / "gen", images[:8], ["remove", "merge"] * 4)
  real = tmp_path / "real" / "bottle" / "test" / "good"
  real.mkdir(parents=True)
  for i, image in enumerate(small(images[8:14], 96)):  # resized back to 128 for clustering
    cv2.imwrite(str(real / f"{i:03d}.png"), image[..., ::-1])
  out = tmp_path / "eval"
  code = evaluate_generation.main([
      "--generated", str(tmp_path / "gen"), "--real", str(tmp_path / "real"),
      "--inception", str(tmp_path / "inception.npz"), "--lpips", str(tmp_path / "vgg16.npz"),
      "--splits", "2", "--num_real", "4", "--batch_size", str(BATCH), "--out", str(out)])
  captured = capsys.readouterr()
  assert code == 0, captured.err
  assert "img/s" in captured.out and "done," in captured.err  # plain progress lines, no TTY
  summary = json.loads((out / "metrics.json").read_text())
  bottle = summary["per_category"]["bottle"]
  assert sorted(bottle) == ["all", "edit_op=merge", "edit_op=remove", "region_kind=semantic"]
  assert bottle["all"]["num_generated"] == 8 and bottle["all"]["num_real"] == 4
  assert bottle["edit_op=merge"]["num_generated"] == 4
  assert bottle["all"]["is_splits"] == 2 and bottle["all"]["is_mean"] >= 1.0
  assert 0 < bottle["all"]["ic_lpips"] < 1
  assert summary["mean"]["is_mean"] == bottle["all"]["is_mean"]
  assert bottle["region_kind=semantic"]["ic_lpips"] == pytest.approx(bottle["all"]["ic_lpips"])
  table = (out / "metrics.md").read_text()
  assert "| bottle |" in table and "## edit_op=remove" in table


def test_evaluate_generation_clusters_around_a_prepared_test_split(tiny_synthetic, backbone_state,
                                                                  tmp_path, capsys):
  data_dir, names = tiny_synthetic
  np.savez(tmp_path / "lpips.npz", **backbone_state)
  rng = np.random.default_rng(0)
  _write_generated(tmp_path / "gen", rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8),
                   ["remove"] * 5)
  (tmp_path / "gen" / "bottle").rename(tmp_path / "gen" / names[0])
  code = evaluate_generation.main([
      "--generated", str(tmp_path / "gen"), "--real", "synthetic", "--data_dir", str(data_dir),
      "--metrics", "ic_lpips", "--lpips", str(tmp_path / "lpips.npz"), "--by", "",
      "--batch_size", str(BATCH)])
  assert code == 0, capsys.readouterr().err
  summary = json.loads((tmp_path / "gen" / "eval" / "metrics.json").read_text())
  result = summary["per_category"][names[0]]
  assert list(result) == ["all"] and "is_mean" not in result["all"]
  assert result["all"]["num_real"] == 8 and result["all"]["num_generated"] == 5

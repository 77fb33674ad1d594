"""State-dict loading without torch (.npz, .safetensors, .pth) and the VGG19 weight import.

torch is not installed, so the .pth files here are written from scratch: a zip archive with
`archive/data.pkl` (a protocol-2 pickle emitted opcode by opcode, naming the same globals and
persistent ids as `torch.save`) and the raw little-endian storages under `archive/data/<key>`,
or the legacy (before PyTorch 1.6) byte stream: header pickles, the same kind of object pickle
with 6-field persistent ids, the storage key list, then each storage's count and elements.
"""

import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from af_jax.models import torch_weights
from af_jax.models.vgg import VGG19Features, load_vgg19_params
import torch_files

# torchvision vgg19 `features` convs up to relu5_1: index -> (out, in) channels.
VGG19_CONVS = {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128),
               12: (256, 256), 14: (256, 256), 16: (256, 256), 19: (512, 256), 21: (512, 512),
               23: (512, 512), 25: (512, 512), 28: (512, 512)}


# --- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vgg_state():
  """A torchvision-vgg19-shaped state dict with small random values (plus an unused key)."""
  rng = np.random.default_rng(0)
  state = {}
  for index, (c_out, c_in) in VGG19_CONVS.items():
    state[f"features.{index}.weight"] = rng.normal(0, 0.01, (c_out, c_in, 3, 3)).astype(np.float32)
    state[f"features.{index}.bias"] = rng.normal(0, 0.01, (c_out,)).astype(np.float32)
  state["classifier.6.bias"] = np.zeros(1000, np.float32)
  return state


@pytest.fixture(scope="module")
def vgg_files(vgg_state, tmp_path_factory):
  folder = tmp_path_factory.mktemp("vgg")
  np.savez(folder / "vgg19.npz", **vgg_state)
  safetensors.numpy.save_file(vgg_state, str(folder / "vgg19.safetensors"))
  torch_files.write_torch_zip(folder / "vgg19.pth", vgg_state, fortran_keys=("features.0.weight",))
  return folder


# --- the generic loader ------------------------------------------------------------------------

def test_real_pidinet_pth_reads_the_same_arrays_as_its_npz(pidinet_pth, pidinet_npz):
  from_pth = torch_weights.load_state_dict(pidinet_pth)
  with np.load(pidinet_npz) as npz:
    reference = {key: npz[key] for key in npz.files}
  assert len(from_pth) == 83 and sorted(from_pth) == sorted(reference)
  for key, want in reference.items():
    assert from_pth[key].dtype == want.dtype and from_pth[key].shape == want.shape, key
    np.testing.assert_array_equal(from_pth[key], want, err_msg=key)
  assert sum(a.size for a in from_pth.values()) == 710_149


def test_written_pth_round_trips_with_strides_shared_storage_and_prefix(tmp_path):
  rng = np.random.default_rng(1)
  matrix = rng.normal(size=(3, 5)).astype(np.float32)
  storage = rng.normal(size=20).astype(np.float32)
  items = (torch_files.pickle_str("module.a") + torch_files.pickle_tensor("0", 15, 0, (3, 5), (1, 3))      # column-major
           + torch_files.pickle_str("module.b") + torch_files.pickle_tensor("1", 20, 4, (2, 3), (3, 1))    # offset into storage 1
           + torch_files.pickle_str("c") + torch_files.pickle_tensor("1", 20, 10, (2, 2), (1, 5))          # same storage, strided
           + torch_files.pickle_str("empty") + torch_files.pickle_tensor("1", 20, 0, (0, 4), (4, 1)))
  pickled = b"\x80\x02" + torch_files.EMPTY_ORDERED_DICT + b"(" + items + b"u."
  torch_files.write_archive(tmp_path / "x.pt", pickled,
                 {"0": matrix.ravel(order="F").tobytes(), "1": storage.tobytes()})
  state = torch_weights.load_state_dict(tmp_path / "x.pt")
  assert sorted(state) == ["a", "b", "c", "empty"]
  np.testing.assert_array_equal(state["a"], matrix)
  np.testing.assert_array_equal(state["b"], storage[4:10].reshape(2, 3))
  np.testing.assert_array_equal(state["c"], [[storage[10], storage[15]],
                                             [storage[11], storage[16]]])
  assert state["empty"].shape == (0, 4)


def test_legacy_pth_round_trips_with_views_and_shared_storage(tmp_path, vgg_state):
  torch_files.write_torch_legacy(tmp_path / "vgg19.pth", vgg_state)
  state = torch_weights.load_state_dict(tmp_path / "vgg19.pth")
  assert sorted(state) == sorted(vgg_state)
  for key, want in vgg_state.items():
    np.testing.assert_array_equal(state[key], want, err_msg=key)
  storage = np.arange(12, dtype=np.float32)
  items = (torch_files.pickle_str("whole") + torch_files.pickle_tensor("0", 12, 2, (2, 3), (3, 1), legacy_view=None)
           + torch_files.pickle_str("view") + torch_files.pickle_tensor("0", 12, 1, (2,), (2,), legacy_view=("v", 4, 6)))
  torch_files.write_legacy(tmp_path / "views.pt", b"\x80\x02" + torch_files.EMPTY_ORDERED_DICT + b"(" + items + b"u.",
                {"0": storage})
  state = torch_weights.load_state_dict(tmp_path / "views.pt")
  np.testing.assert_array_equal(state["whole"], storage[2:8].reshape(2, 3))
  np.testing.assert_array_equal(state["view"], storage[4:10][1::2][:2])


def test_legacy_pth_with_bad_sizes_or_code_is_refused(tmp_path):
  one = torch_files.pickle_str("w") + torch_files.pickle_tensor("0", 4, 0, (4,), (1,), legacy_view=None)
  body = b"\x80\x02" + torch_files.EMPTY_ORDERED_DICT + b"(" + one + b"u."
  torch_files.write_legacy(tmp_path / "short.pth", body, {"0": np.zeros(3, np.float32)})
  with pytest.raises(pickle.UnpicklingError, match="storage 0 is truncated"):
    torch_weights.load_state_dict(tmp_path / "short.pth")
  huge = torch_files.pickle_str("w") + torch_files.pickle_tensor("0", 2**31 - 1, 0, (4,), (1,), legacy_view=None)
  torch_files.write_legacy(tmp_path / "huge.pth", b"\x80\x02" + torch_files.EMPTY_ORDERED_DICT + b"(" + huge + b"u.",
                {"0": np.zeros(4, np.float32)})
  with pytest.raises(pickle.UnpicklingError, match="more than the file holds"):
    torch_weights.load_state_dict(tmp_path / "huge.pth")
  marker = tmp_path / "was_executed"
  torch_files.write_legacy(tmp_path / "evil.pth", pickle.dumps({"w": _RunsCode(marker)}, protocol=2), {})
  with pytest.raises(torch_weights.UnsafeCheckpointError, match=r"(posix|os)\.system"):
    torch_weights.load_state_dict(tmp_path / "evil.pth")
  assert not marker.exists()


def test_npz_and_safetensors_keys_lose_the_data_parallel_prefix(tmp_path):
  arrays = {"module.conv.weight": np.ones((2, 1, 3, 3), np.float32), "head.bias": np.zeros(2)}
  np.savez(tmp_path / "w.npz", **arrays)
  safetensors.numpy.save_file(arrays, str(tmp_path / "w.safetensors"))
  for name in ("w.npz", "w.safetensors"):
    state = torch_weights.load_state_dict(tmp_path / name)
    assert sorted(state) == ["conv.weight", "head.bias"]
    np.testing.assert_array_equal(state["conv.weight"], arrays["module.conv.weight"])


class _RunsCode:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused_with_a_conversion_hint(tmp_path):
  marker = tmp_path / "was_executed"
  torch_files.write_archive(tmp_path / "evil.pth", pickle.dumps({"w": _RunsCode(marker)}, protocol=2), {})
  with pytest.raises(torch_weights.UnsafeCheckpointError, match=r"(posix|os)\.system") as error:
    torch_weights.load_state_dict(tmp_path / "evil.pth")
  assert "np.savez" in str(error.value) and "evil.pth" in str(error.value)
  assert not marker.exists()


def test_bad_files_are_rejected_with_the_path_and_the_reason(tmp_path):
  legacy = tmp_path / "legacy.pth"
  legacy.write_bytes(pickle.dumps({"w": 1}, protocol=2))
  with pytest.raises(ValueError, match="not a PyTorch zip checkpoint"):
    torch_weights.load_state_dict(legacy)
  past_end = b"\x80\x02" + torch_files.EMPTY_ORDERED_DICT + b"(" + torch_files.pickle_str("w") + torch_files.pickle_tensor(
      "0", 4, 2, (2, 2), (2, 1)) + b"u."
  torch_files.write_archive(tmp_path / "overrun.pth", past_end, {"0": np.zeros(4, np.float32).tobytes()})
  with pytest.raises(pickle.UnpicklingError, match="reads past its storage"):
    torch_weights.load_state_dict(tmp_path / "overrun.pth")
  (tmp_path / "w.ckpt").write_bytes(b"")
  with pytest.raises(ValueError, match=r"w\.ckpt.*unsupported"):
    torch_weights.load_state_dict(tmp_path / "w.ckpt")
  with pytest.raises(FileNotFoundError, match="missing.npz"):
    torch_weights.load_state_dict(tmp_path / "missing.npz")


# --- VGG19 import ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["vgg19.npz", "vgg19.safetensors", "vgg19.pth"])
def test_vgg19_params_round_trip_from_every_format(name, vgg_files, vgg_state):
  params = load_vgg19_params(vgg_files / name)
  assert sorted(params) == sorted(f"conv_{i}" for i in VGG19_CONVS)
  for index in VGG19_CONVS:
    kernel = params[f"conv_{index}"]["kernel"]
    assert kernel.dtype == np.float32
    np.testing.assert_array_equal(kernel.transpose(3, 2, 0, 1),
                                  vgg_state[f"features.{index}.weight"])
    np.testing.assert_array_equal(params[f"conv_{index}"]["bias"],
                                  vgg_state[f"features.{index}.bias"])


def test_loaded_vgg19_computes_relu1_1_like_torchvision(vgg_files, vgg_state):
  params = load_vgg19_params(vgg_files / "vgg19.pth")
  x = np.random.default_rng(2).uniform(-1, 1, size=(1, 16, 16, 3)).astype(np.float32)
  features = VGG19Features().apply({"params": params}, jnp.asarray(x))
  assert [f.shape[1:] for f in features] == [(16, 16, 64), (8, 8, 128), (4, 4, 256),
                                            (2, 2, 512), (1, 1, 512)]
  padded = np.pad(x[0], ((1, 1), (1, 1), (0, 0)))
  w, b = vgg_state["features.0.weight"], vgg_state["features.0.bias"]
  for i, j in ((0, 0), (7, 12), (15, 15)):
    want = np.maximum(np.einsum("hwc,ochw->o", padded[i:i + 3, j:j + 3], w) + b, 0)
    np.testing.assert_allclose(features[0][0, i, j], want, atol=1e-5)


def test_vgg19_import_names_the_bad_key_and_the_expected_shape(vgg_state, tmp_path):
  missing = {k: v for k, v in vgg_state.items() if k != "features.21.bias"}
  np.savez(tmp_path / "missing.npz", **missing)
  with pytest.raises(ValueError,
                     match=r"missing key 'features\.21\.bias' \(expected shape \(512,\)"):
    load_vgg19_params(tmp_path / "missing.npz")
  wrong = dict(vgg_state, **{"features.5.weight": np.zeros((128, 64, 1, 1), np.float32)})
  np.savez(tmp_path / "wrong.npz", **wrong)
  with pytest.raises(ValueError, match=r"'features\.5\.weight' has shape \(128, 64, 1, 1\), "
                                       r"expected \(128, 64, 3, 3\)"):
    load_vgg19_params(tmp_path / "wrong.npz")


def test_vgg19_import_refuses_an_unsafe_pth(tmp_path):
  marker = tmp_path / "was_executed"
  torch_files.write_archive(tmp_path / "vgg19.pth", pickle.dumps(_RunsCode(marker), protocol=2), {})
  with pytest.raises(torch_weights.UnsafeCheckpointError):
    load_vgg19_params(tmp_path / "vgg19.pth")
  assert not marker.exists()


def test_vgg19_params_tree_matches_the_module(vgg_files):
  params = load_vgg19_params(vgg_files / "vgg19.npz")
  expected = jax.eval_shape(VGG19Features().init, jax.random.key(0),
                            jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))["params"]
  assert jax.tree.map(lambda a: a.shape, expected) == jax.tree.map(lambda a: a.shape, params)

"""Shared test fixtures: where the real data and weights in ../shared live."""

import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("AF_JAX_SHARED", REPO.parent / "shared"))
BOTTLE = SHARED / "data" / "mvtec_ad" / "bottle"
PIDINET_PTH = SHARED / "pretrained" / "pidinet" / "table5_pidinet.pth"
PIDINET_NPZ = SHARED / "pretrained" / "pidinet" / "table5_pidinet.npz"


def _require(path: pathlib.Path) -> pathlib.Path:
  if not path.exists():
    pytest.skip(f"real test data not found at {path} (the ../shared folder beside the "
                "repository; set AF_JAX_SHARED to point elsewhere)")
  return path


@pytest.fixture(scope="session")
def bottle_dir() -> pathlib.Path:
  """The real MVTec AD `bottle` category (256 px, original layout)."""
  return _require(BOTTLE)


@pytest.fixture(scope="session")
def pidinet_npz() -> pathlib.Path:
  """The official table5_pidinet state dict as numpy arrays."""
  return _require(PIDINET_NPZ)


@pytest.fixture(scope="session")
def pidinet_pth() -> pathlib.Path:
  """The official table5_pidinet torch checkpoint."""
  return _require(PIDINET_PTH)


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
  """(data_dir, category names): the synthetic set at 32 px with Canny edges, a few images."""
  from data_builders import synthetic
  data_dir = tmp_path_factory.mktemp("tiny_synthetic")
  names = synthetic.build(data_dir, size=32, edges="canny", num_train=8, num_test_normal=2,
                          num_test_anomalous=6)
  return data_dir, names

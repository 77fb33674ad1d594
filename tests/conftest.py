"""Shared test fixtures: where the real data and weights in ../shared live, tiny data and runs.

The suite compiles many small XLA programs on a 2-core CPU, so before JAX is imported it turns
off XLA's costly CPU backend optimizations (tiny programs do not need them) and shares a
persistent compilation cache between test processes and the subprocesses they start (the
same tiny training step is compiled once, not once per process). Set XLA_FLAGS or
JAX_COMPILATION_CACHE_DIR yourself to override either.

With AF_JAX_TEST_INSTALLED=1 (`.ci/run`), the suite tests the installed af_jax, not the checkout:
before anything imports af_jax, the repository root ('' and '.' too: `python -m pytest` and
xdist's workers put the working folder first) leaves `sys.path` and PYTHONPATH, and Python's
safe-path mode keeps it out of the subprocesses the tests start (`python -c` run in the
checkout); the test folders stay on the path (the tests import `conftest` and their siblings
as top-level modules). Should af_jax still resolve inside the checkout, the run stops at once.
"""

import hashlib
import importlib.util
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import textwrap

FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ.setdefault("XLA_FLAGS", FAST_XLA)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "af_jax_test_xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pytest  # pylint: disable=g-import-not-at-top

REPO = pathlib.Path(__file__).resolve().parents[1]
INSTALLED = os.environ.get("AF_JAX_TEST_INSTALLED") == "1"
SHARED = pathlib.Path(os.environ.get("AF_JAX_SHARED", REPO.parent / "shared"))
BOTTLE = SHARED / "data" / "mvtec_ad" / "bottle"
PIDINET_PTH = SHARED / "pretrained" / "pidinet" / "table5_pidinet.pth"
PIDINET_NPZ = SHARED / "pretrained" / "pidinet" / "table5_pidinet.npz"
GENMETRICS_REF = SHARED / "fixtures" / "genmetrics_ref.npz"


def _in_checkout(entry: str) -> bool:
  return entry in ("", ".") or pathlib.Path(entry).resolve() == REPO


def _use_the_installed_af_jax() -> None:
  """Takes the checkout off the import path of this process and its children (module
  docstring); pytest.UsageError when af_jax still resolves inside the checkout."""
  sys.path[:] = [entry for entry in sys.path if not _in_checkout(entry)]
  os.environ["PYTHONPATH"] = os.pathsep.join(
      entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep)
      if entry and not _in_checkout(entry))
  os.environ["PYTHONSAFEPATH"] = "1"
  spec = importlib.util.find_spec("af_jax")
  origin = pathlib.Path(spec.origin).resolve() if spec and spec.origin else None
  if origin is None or origin.parent == REPO / "af_jax":
    raise pytest.UsageError(
        f"AF_JAX_TEST_INSTALLED=1 tests the installed af_jax, but af_jax resolves to {origin} "
        f"(the checkout's own, or nothing): install the wheel non-editable into this "
        "environment (`.ci/run` does)")


if INSTALLED:
  _use_the_installed_af_jax()


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
def genmetrics_ref() -> pathlib.Path:
  """Reference outputs of torch-fidelity's Inception and lpips' LPIPS-VGG (fixtures/README.md)."""
  return _require(GENMETRICS_REF)


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
  """(data_dir, category names): the synthetic set at 32 px with Canny edges, a few images."""
  from af_jax.data_builders import synthetic
  data_dir = tmp_path_factory.mktemp("tiny_synthetic")
  names = synthetic.build(data_dir, size=32, edges="canny", num_train=8, num_test_normal=2,
                          num_test_anomalous=6)
  return data_dir, names


# The tests' helpers (`tiny_config`, ...) for subprocesses, and the checkout unless INSTALLED.
PYTHONPATH = os.pathsep.join(([] if INSTALLED else [str(REPO)]) + [str(REPO / "tests")])


def subprocess_env(**extra) -> dict:
  """Environment for test subprocesses: PYTHONPATH above, CPU, the fast XLA flags."""
  return dict(os.environ, PYTHONPATH=PYTHONPATH, JAX_PLATFORMS="cpu", **extra)


_TRAIN_CHAIN = """
  import sys
  from af_jax.training import train
  from tiny_config import tiny_config
  data_dir, names, root = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
  teacher = ""
  for stage in ("boot", "flare", "blaze"):
    config = tiny_config(stage, data_dir, names, teacher=teacher, steps=2)
    config.model.num_d, config.model.n_layers_d = 1, 1
    train.train(config, f"{root}/{stage}")
    teacher = f"{root}/{stage}"
"""


@pytest.fixture(scope="session")
def runs(tiny_synthetic, tmp_path_factory):
  """(root with boot/flare/blaze workdirs, data_dir, names): trained 2 steps each, once a session.

  Trained in a subprocess so the test process's own JAX state stays untouched.
  """
  data_dir, names = tiny_synthetic
  root = tmp_path_factory.getbasetemp() / "tiny_runs"
  done = root / "trained"
  if not done.exists():
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_TRAIN_CHAIN), str(data_dir),
                           ",".join(names), str(root)], env=subprocess_env(),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    done.touch()
  return root, data_dir, names


_PIDINET_CHAIN = """
  import sys
  from af_jax.training import train
  from af_jax.data_builders import synthetic
  from tiny_config import tiny_config
  root = sys.argv[1]
  names = synthetic.build(f"{root}/data", size=32, edges="pidinet", num_train=8,
                          num_test_normal=2, num_test_anomalous=4)
  teacher = ""
  for stage in ("boot", "flare", "blaze", "blaze_reference", "blaze_patch"):
    config = tiny_config(stage.split("_")[0], f"{root}/data", names, teacher=teacher, steps=2)
    config.model.num_d, config.model.n_layers_d = 1, 1
    config.blaze.reference = stage in ("blaze_reference", "blaze_patch")
    config.blaze.patch_guide = config.blaze.score_on_object = stage == "blaze_patch"
    config.blaze.patch_memory, config.blaze.patch_stride = 2048, 2
    config.blaze.evidence_memory, config.blaze.evidence_pool = 2048, 4096
    config.blaze.evidence_trust = stage == "blaze_patch"
    config.blaze.trust_images = 4
    train.train(config, f"{root}/{stage}")
    teacher = f"{root}/{stage}" if stage in ("boot", "flare") else teacher
  print(",".join(names))
"""


@pytest.fixture(scope="session")
def pidinet_runs(tmp_path_factory):
  """(root, names): a tiny chain on PiDiNet edges (the default edges, the ones that export),
  with three Blaze runs: `blaze` without and `blaze_reference` with `blaze.reference`,
  `blaze_patch` with it, `blaze.patch_guide` (stride 2), `blaze.score_on_object` and
  `blaze.evidence_trust`; trained once a session, in a subprocess."""
  root = tmp_path_factory.getbasetemp() / "pidinet_runs"
  done = root / "trained"
  if not done.exists():
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_PIDINET_CHAIN), str(root)],
                          env=subprocess_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    done.write_text(proc.stdout.strip().splitlines()[-1])
  return root, done.read_text().split(",")


@pytest.fixture
def restore_logging():
  """For tests running `af-jax train` in-process, whose main configures logging globally."""
  root, absl = logging.getLogger(), logging.getLogger("absl")
  root_level, root_handlers, absl_level = root.level, list(root.handlers), absl.level
  yield
  root.setLevel(root_level)
  root.handlers[:] = root_handlers
  absl.setLevel(absl_level)


@pytest.fixture
def small_disk(tmp_path):
  """`make(size_bytes)` -> a folder on a real file system of that size (a tmpfs mount).

  Disk-full behaviour is tested against the kernel's own ENOSPC, not a simulated one; mounting
  needs root (or CAP_SYS_ADMIN), so tests using it skip where that is not allowed.
  """
  mounts = []

  def make(size_bytes: int) -> pathlib.Path:
    folder = tmp_path / f"disk{len(mounts)}"
    folder.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs",
                           str(folder)], capture_output=True, text=True, check=False)
    if proc.returncode:
      pytest.skip(f"cannot mount a small tmpfs to fill up (needs root): {proc.stderr.strip()}")
    mounts.append(folder)
    return folder

  yield make
  for folder in mounts:
    subprocess.run(["umount", "-l", str(folder)], check=False)


def corrupt_bytes(path: pathlib.Path, offset: int = 1000, count: int = 2048) -> None:
  """Overwrites `count` bytes of a file in place (inverted, so they surely differ)."""
  with path.open("r+b") as f:
    f.seek(min(offset, max(path.stat().st_size - count, 0)))
    where = f.tell()
    data = f.read(count)
    f.seek(where)
    f.write(bytes(255 - b for b in data))


def largest_file(folder: pathlib.Path) -> pathlib.Path:
  return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def run_cli(*args, capsys) -> tuple[int, str]:
  """(exit status, the last line of stderr) of `af-jax ARGS`, asserting no traceback; usage
  errors exit with 2."""
  from af_jax import cli  # pylint: disable=g-import-not-at-top  (after the path set-up above)
  try:
    code = cli.main([*map(str, args)])
  except SystemExit as e:  # argparse's usage errors.
    code = e.code
  err = capsys.readouterr().err
  assert "Traceback" not in err, err
  return code, err.strip().splitlines()[-1] if err.strip() else ""


def file_hashes(folder: pathlib.Path) -> dict[str, str]:
  """Every file under `folder` with the hash of its bytes (but the log every verb appends to,
  README "Quick start"): what a refused command must leave unchanged."""
  return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "af_jax.log"}


def copy_run(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
  """A private copy of a workdir, for tests that write into it or break it."""
  shutil.copytree(src, dst, ignore=shutil.ignore_patterns("metrics"))
  return dst


def bottle_images_and_edges(bottle_dir, names, size: int = 32):
  """Real bottle images at `size` px in [-1, 1] [N,S,S,3] and their Canny edges in {-1, 1}."""
  import cv2  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  images, edges = [], []
  for name in names:
    bgr = cv2.imread(str(bottle_dir / "train" / "good" / name))
    small = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA)
    edges.append(cv2.Canny(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), 50, 150) / 127.5 - 1.0)
    images.append(small[..., ::-1] / 127.5 - 1.0)
  return (jnp.asarray(np.stack(edges)[..., None], jnp.float32),
          jnp.asarray(np.stack(images), jnp.float32))

"""The wheel and the sdist hold the whole product under the one name `af_jax`.

setup.cfg lists its packages explicitly (the configs/ and data_builders/ mapping rules out
`find:`), so a package folder added to the tree but not to the list would be missing from the
wheel while every test of an editable checkout still passes. The wheel is built from a clean
copy of the sources (setuptools reuses a stale `build/` folder), or taken from $AF_JAX_WHEEL
where `.ci/run` built the one it installed. The `network` tests ask the package index whether
the accelerator extras resolve (`-m network`; no device needed).
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

from conftest import INSTALLED, REPO, subprocess_env

# Source folder: the name its packages install under (setup.cfg's package_dir).
INSTALLED_AS = {"af_jax": "af_jax", "configs": "af_jax/configs",
                "data_builders": "af_jax/data_builders"}
# What the build reads besides those folders: every plain file at the repository's top level.
NOT_SOURCES = shutil.ignore_patterns("__pycache__", "*.egg-info")
BUILD_TIMEOUT_S = 300


def _sources(tmp_path_factory) -> pathlib.Path:
  """A copy of what the build reads, free of build leftovers."""
  src = tmp_path_factory.mktemp("src")
  for path in REPO.iterdir():
    if path.is_file():
      shutil.copy2(path, src)
  for folder in INSTALLED_AS:
    shutil.copytree(REPO / folder, src / folder, ignore=NOT_SOURCES)
  return src


def _build(command: list[str], cwd: pathlib.Path) -> None:
  proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True,
                        timeout=BUILD_TIMEOUT_S, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> pathlib.Path:
  """The wheel: $AF_JAX_WHEEL, or one built now without build isolation (no index needed)."""
  if os.environ.get("AF_JAX_WHEEL"):
    return pathlib.Path(os.environ["AF_JAX_WHEEL"]).resolve()
  src = _sources(tmp_path_factory)
  _build([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", ".",
          "-w", "dist"], src)
  (built,) = (src / "dist").glob("af_jax-*.whl")
  return built


def _python_files() -> dict[str, list[str]]:
  """{installed package path: its .py file names} for every source folder holding .py files."""
  packages = {}
  for folder, installed in INSTALLED_AS.items():
    for path in sorted((REPO / folder).rglob("*.py")):
      package = pathlib.PurePosixPath(installed, path.parent.relative_to(REPO / folder))
      packages.setdefault(str(package), []).append(path.name)
  return packages


def test_the_wheel_holds_every_package_and_the_shipped_files(wheel):
  names = set(zipfile.ZipFile(wheel).namelist())
  packages = _python_files()
  assert "af_jax/ops" in packages and "af_jax/data_builders/synthetic" in packages
  missing = [f"{package}/{file}" for package, files in packages.items()
             for file in sorted({"__init__.py", *files}) if f"{package}/{file}" not in names]
  assert not missing, (f"{wheel.name} lacks {missing}: list each package in setup.cfg's "
                       "[options] packages, each with an __init__.py")
  shipped = [f"af_jax/pretrained/{p.name}" for p in (REPO / "af_jax" / "pretrained").iterdir()]
  assert shipped and not set(shipped) - names, sorted(set(shipped) - names)


def test_the_wheel_installs_only_af_jax_and_its_command(wheel):
  names = zipfile.ZipFile(wheel).namelist()
  dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
  assert {name.split("/")[0] for name in names} == {"af_jax", dist_info}
  with zipfile.ZipFile(wheel) as archive:
    entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
  assert "af-jax = af_jax.cli:main" in entry_points


def test_the_sdist_holds_the_source_layout(tmp_path_factory):
  """The sdist keeps the repository's layout (configs/, data_builders/ at the top level)."""
  src = _sources(tmp_path_factory)
  _build([sys.executable, "-c", "import sys; from setuptools import build_meta; "
          "build_meta.build_sdist(sys.argv[1])", "dist"], src)
  (sdist,) = (src / "dist").glob("af_jax-*.tar.gz")
  with tarfile.open(sdist) as archive:
    names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
  expected = [f"{folder}/{path.relative_to(REPO / folder).as_posix()}"
              for folder in INSTALLED_AS for path in (REPO / folder).rglob("*.py")]
  expected += [f"af_jax/pretrained/{p.name}" for p in (REPO / "af_jax" / "pretrained").iterdir()]
  expected += ["setup.cfg", "pyproject.toml", "README.md"]
  assert not set(expected) - names, sorted(set(expected) - names)


@pytest.mark.skipif(not INSTALLED, reason="AF_JAX_TEST_INSTALLED=1 only (.ci/run)")
def test_installed_mode_imports_the_installed_af_jax_everywhere():
  """This (xdist worker) process and a subprocess started in the checkout both import the
  installed af_jax, not the checkout's (conftest.py)."""
  import af_jax  # pylint: disable=g-import-not-at-top
  proc = subprocess.run([sys.executable, "-c", "import af_jax; print(af_jax.__file__)"],
                        cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                        timeout=60, check=True)
  for where in (af_jax.__file__, proc.stdout.strip()):
    assert pathlib.Path(where).resolve().parent != REPO / "af_jax", where


@pytest.mark.network
@pytest.mark.parametrize("extra, plugins", [("cuda12", ("jax-cuda12-plugin", "jax-cuda12-pjrt")),
                                            ("tpu", ("libtpu",))])
def test_the_accelerator_extras_resolve(wheel, extra, plugins):
  """pip resolves `af_jax[EXTRA]` (nothing installed) to jax with the extra's plugins; CUDA
  plugins at jaxlib's version."""
  proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run",
                         "--ignore-installed", "--quiet", "--report", "-", f"{wheel}[{extra}]"],
                        capture_output=True, text=True, timeout=900, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  versions = {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
              for item in json.loads(proc.stdout)["install"]}
  assert {"af-jax", "jax", "jaxlib", *plugins} <= set(versions), sorted(versions)
  if extra == "cuda12":
    assert {versions[plugin] for plugin in plugins} == {versions["jaxlib"]}, versions

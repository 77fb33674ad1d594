"""`af-jax info`: the facts a bug report needs, one `key: value` a line (or `--json`).

  af-jax info [--json] [--distributed]

Versions of af_jax and the libraries it runs on, Python, the JAX accelerator plugins that the
`[cuda12]` / `[tpu]` extras install, the devices JAX sees, whether the PiDiNet weights shipped
inside the package load, and whether TensorFlow is installed. TensorFlow is optional (af_jax
needs it for nothing), so it is looked up, never imported: importing it takes seconds and may
claim accelerator memory. A part that fails (JAX finding no usable backend, a damaged weight
file) says so on its own line, so the report is complete whatever is broken. On a multi-host
TPU slice, run it on every host with `--distributed` (the multi-host flags of `af-jax train`).
"""

import argparse
import collections
import importlib.metadata
import importlib.util
import json
import platform
import sys

import af_jax
from af_jax import package_data
from af_jax.commands import host_flags

PACKAGES = ("jax", "jaxlib", "flax", "orbax-checkpoint", "tensorflow-datasets", "grain", "numpy")
# What `pip install 'af_jax[cuda12]'` / `'af_jax[tpu]'` add beside jax.
PLUGINS = ("jax-cuda12-plugin", "jax-cuda12-pjrt", "libtpu")


def _version(distribution: str) -> str | None:
  try:
    return importlib.metadata.version(distribution)
  except importlib.metadata.PackageNotFoundError:
    return None


def _devices() -> dict[str, str]:
  """The backend JAX picked and its devices, or the error it gave."""
  import jax  # pylint: disable=g-import-not-at-top
  try:
    devices = jax.devices()
  except RuntimeError as e:
    return {"devices": f"error: {e}"}
  kinds = collections.Counter(device.device_kind for device in devices)
  return {"platform": jax.default_backend(),
          "devices": f"{len(devices)} ({jax.local_device_count()} on this host; process "
                     f"{jax.process_index()} of {jax.process_count()})",
          "device kinds": ", ".join(f"{count} x {kind}" for kind, count in kinds.items())}


def _pidinet() -> str:
  """Whether the shipped PiDiNet weights are there and load."""
  from af_jax.models import pidinet  # pylint: disable=g-import-not-at-top
  with package_data.pretrained_file(pidinet.SHIPPED_WEIGHTS) as path:
    if not path.is_file():
      return f"missing: {path} (a broken install: reinstall af_jax)"
    size = path.stat().st_size
  try:
    pidinet.load_pidinet_params()
  except (OSError, ValueError) as e:
    return f"present ({size} bytes) but does not load: {e}"
  return f"loads ({path.name}, {size} bytes)"


def facts() -> dict[str, str]:
  """The report, in the order it prints."""
  report = {"af_jax": f"{af_jax.__version__} ({af_jax.__path__[0]})",
            "python": f"{platform.python_version()} ({sys.executable})",
            "os": platform.platform()}
  report.update((name, _version(name) or "not installed") for name in PACKAGES)
  plugins = [f"{name} {_version(name)}" for name in PLUGINS if _version(name)]
  report["jax plugins"] = ", ".join(plugins) or "none (JAX can use the CPU only)"
  report.update(_devices())
  report["pidinet weights"] = _pidinet()
  if importlib.util.find_spec("tensorflow") is None:
    report["tensorflow"] = "not installed (optional: af_jax does not need it)"
  else:
    report["tensorflow"] = f"{_version('tensorflow') or 'installed'} (not imported)"
  return report


def main(argv: list[str]) -> int:
  """`af-jax info [--json]`: prints `facts()`."""
  parser = argparse.ArgumentParser(prog="af-jax info", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--json", action="store_true", help="one JSON object instead of lines")
  host_flags.add(parser)
  args = parser.parse_args(argv)
  host_flags.start(args)
  report = facts()
  if args.json:
    print(json.dumps(report, indent=2))
  else:
    print("\n".join(f"{key}: {value}" for key, value in report.items()))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

"""`af-jax` command line: one subcommand per job, each living in its own module.

  af-jax prepare   build a dataset (TFDS ArrayRecord) from a manual download
  af-jax train     train one stage (Boot, Flare or Blaze) from an ml_collections config
  af-jax generate  make anomaly images + masks + heatmaps with a trained FlareGenerator
  af-jax localize  heatmaps, masks and OK/NG for your images with a trained BlazeDetector
  af-jax evaluate  pixel AUROC, AUPRO and image AUROC on a prepared test split
  af-jax evaluate-generation  Inception Score and IC-LPIPS of generated images
  af-jax convert-weights      a .pth state dict (Inception, VGG16, ...) to .npz
  af-jax export    a prepared category as PNG files in the MVTec AD layout
  af-jax export-detector      a trained detector as one StableHLO file, callable with JAX alone
  af-jax serve-folder         verdicts for images as they land in a folder (exported detector)
  af-jax demo      everything above on the built-in synthetic data, on CPU, in minutes
  af-jax configs   the configs shipped with af_jax (`--config configs/NAME.py` finds them)
  af-jax info      versions, the devices JAX sees, shipped weights: paste it into a bug report
  af-jax --version  the installed version

Every verb is one line of `COMMANDS`: the function `module:function` that takes the verb's
arguments (`argv`), parses them with its own argparse parser (so `af-jax VERB --help` lists the
verb's flags and exits 0) and returns the exit status. Modules are imported only for the verb
that runs, so `af-jax --help` is instant. Log records are routed the same way for every verb
(`log_setup.py`): af_jax's on the console, libraries' in the run's `af_jax.log`.
"""

import importlib
import sys

import af_jax
from af_jax import log_setup

COMMANDS = {
    "prepare": "af_jax.commands.prepare:main",
    "train": "af_jax.commands.train:main",
    "generate": "af_jax.commands.generate:main",
    "localize": "af_jax.commands.localize:main",
    "evaluate": "af_jax.commands.evaluate:main",
    "evaluate-generation": "af_jax.commands.evaluate_generation:main",
    "convert-weights": "af_jax.commands.convert_weights:main",
    "export": "af_jax.commands.export:main",
    "export-detector": "af_jax.commands.export_detector:main",
    "serve-folder": "af_jax.commands.serve_folder:main",
    "demo": "af_jax.commands.demo:main",
    "configs": "af_jax.commands.configs:main",
    "info": "af_jax.commands.info:main",
}


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ("-h", "--help", "help"):
    print(__doc__)
    return 0
  if argv[0] == "--version":
    print(f"af_jax {af_jax.__version__}")
    return 0
  name, rest = argv[0], argv[1:]
  if name not in COMMANDS:
    print(f"af-jax: unknown command {name!r}; expected one of {', '.join(COMMANDS)}",
          file=sys.stderr)
    return 2
  module, function = COMMANDS[name].split(":")
  with log_setup.routed(name, rest):
    return int(getattr(importlib.import_module(module), function)(rest) or 0)


if __name__ == "__main__":
  sys.exit(main())

"""`af-jax` command line: one subcommand per job, each living in its own module.

  af-jax prepare   build a dataset (TFDS ArrayRecord) from a manual download
  af-jax train     train one stage (Boot, Flare or Blaze) from an ml_collections config
  af-jax generate  make anomaly images + masks + heatmaps with a trained FlareGenerator
  af-jax localize  heatmaps, masks and OK/NG for your images with a trained BlazeDetector
  af-jax evaluate  pixel AUROC, AUPRO and image AUROC on a prepared test split
  af-jax evaluate-generation  Inception Score and IC-LPIPS of generated images
  af-jax convert-weights      a .pth state dict (Inception, VGG16, ...) to .npz
  af-jax demo      everything above on the built-in synthetic data, on CPU, in minutes

Each module exposes `main(argv) -> int`; importing is lazy so `af-jax --help` is instant.
"""

import importlib
import sys

COMMANDS = {
    "prepare": "af_jax.prepare",
    "train": "af_jax.train",
    "generate": "af_jax.commands",
    "localize": "af_jax.commands",
    "evaluate": "af_jax.commands",
    "evaluate-generation": "af_jax.generation_eval",
    "convert-weights": "af_jax.convert_weights",
    "demo": "af_jax.demo",
}


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ("-h", "--help", "help"):
    print(__doc__)
    return 0
  name, rest = argv[0], argv[1:]
  if name not in COMMANDS:
    print(f"af-jax: unknown command {name!r}; expected one of {', '.join(COMMANDS)}",
          file=sys.stderr)
    return 2
  module = importlib.import_module(COMMANDS[name])
  runner = getattr(module, f"{name}_main", None) or module.main
  return int(runner(rest) or 0)


if __name__ == "__main__":
  sys.exit(main())

"""`af-jax convert-weights`: a published `.pth` state dict -> `.npz` (or `.safetensors`).

  af-jax convert-weights weights-inception-2015-12-05-6726825d.pth inception.npz --model inception
  af-jax convert-weights vgg16-397923af.pth lpips_vgg16.npz --model lpips
  af-jax convert-weights any_state_dict.pth out.npz

The `.pth` is read without running pickled code (`af_jax.models.torch_weights`; zip and legacy
formats). Floating-point tensors are written as float32, others unchanged. `--model` checks
every key and shape the model needs (an error names the key) and keeps only those keys, in
the input's naming: for `lpips` from torchvision's VGG16 that drops the classifier (most of
the file); LPIPS heads stay out unless the input has them (the package ships the `lpips`
ones). Everything af_jax reads `.pth` from also reads the output.
"""

import argparse
import pathlib
import pickle
import sys

import numpy as np

MODELS = ("inception", "lpips")


def convert(source, target, model: str | None = None) -> dict[str, np.ndarray]:
  """Writes `source`'s state dict to `target` (.npz / .safetensors); returns what was written."""
  from af_jax.models import torch_weights  # pylint: disable=g-import-not-at-top
  target = pathlib.Path(target)
  if target.suffix.lower() not in (".npz", ".safetensors"):
    raise ValueError(f"{target}: the output must end in .npz or .safetensors")
  state = torch_weights.load_state_dict(source)
  if model is not None:
    state = _keys_of(model, state, source)
  state = {k: np.ascontiguousarray(v, np.float32) if np.issubdtype(v.dtype, np.floating)
           or v.dtype.name == "bfloat16" else v for k, v in state.items()}
  target.parent.mkdir(parents=True, exist_ok=True)
  if target.suffix.lower() == ".npz":
    np.savez(target, **state)
  else:
    import safetensors.numpy  # pylint: disable=g-import-not-at-top
    safetensors.numpy.save_file(state, str(target))
  return state


def _keys_of(model: str, state: dict, source) -> dict:
  """The entries `model` reads, checked by loading them; raises naming a bad key."""
  from af_jax.metrics import generation  # pylint: disable=g-import-not-at-top
  from af_jax.models import inception, lpips  # pylint: disable=g-import-not-at-top
  if model == "inception":
    inception.load_inception_variables(state, source)
    return {k: state[k] for k in inception.torch_keys()}
  if model == "lpips":
    generation.load_lpips(state)
    return {k: state[k] for k in lpips.torch_keys(lpips.uses_torchvision_names(state))
            if k in state}
  raise ValueError(f"unknown model {model!r}; expected one of {MODELS}")


def main(argv) -> int:
  parser = argparse.ArgumentParser(prog="af-jax convert-weights", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("source", help="state dict: .pth / .pt (zip or legacy), .npz, .safetensors")
  parser.add_argument("target", help="output .npz or .safetensors")
  parser.add_argument("--model", choices=MODELS,
                      help="check the keys and shapes this model needs and keep only those")
  args = parser.parse_args(argv)
  try:
    state = convert(args.source, args.target, args.model)
  except (OSError, ValueError, pickle.UnpicklingError) as e:
    print(f"af-jax convert-weights: error: {e}", file=sys.stderr)
    return 1
  count = sum(int(np.size(v)) for v in state.values())
  print(f"af-jax convert-weights: wrote {len(state)} arrays ({count:,} values) to {args.target}")
  return 0

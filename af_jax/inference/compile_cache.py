"""Compiled detectors kept on disk, so a production process compiles each batch size once, ever.

An exported detector (`af_jax.load_detector`) is compiled by XLA for each batch size it is
called with: seconds to minutes of a 256 px detector, paid again by every new process. JAX's
persistent compilation cache keeps the compiled program in a folder and finds it there on
the next start. The folder is `$AF_JAX_COMPILATION_CACHE`, else
`<$XDG_CACHE_HOME or ~/.cache>/af_jax/compiled`; an empty `AF_JAX_COMPILATION_CACHE` (or
`load_detector(..., compilation_cache="")`) keeps nothing. A process that already set its own
(`jax_compilation_cache_dir`) keeps its own.

JAX trusts what it finds there (it runs it): keep the folder writable by its user alone.
"""

import os
import pathlib

ENV = "AF_JAX_COMPILATION_CACHE"


def default_folder() -> str:
  """The folder compiled programs are kept in by default ('' for none; module docstring)."""
  if ENV in os.environ:
    return os.environ[ENV]
  base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  return str(pathlib.Path(base) / "af_jax" / "compiled")


def use(folder: str | os.PathLike | None = None) -> None:
  """Keeps this process's compiled JAX programs in `folder` (default: `default_folder()`),
  unless it is '' or the process keeps them somewhere already."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental.compilation_cache import compilation_cache  # pylint: disable=g-import-not-at-top
  folder = default_folder() if folder is None else str(folder)
  if not folder or jax.config.jax_compilation_cache_dir:
    return
  compilation_cache.set_cache_dir(folder)
  # JAX decides once per process whether it caches, at its first compile: one made before
  # this call, without a folder, would have switched the cache off for good.
  compilation_cache.reset_cache()

"""`af-jax configs`: the config files shipped with af_jax, and how a `configs/NAME.py` is found.

  af-jax configs

The README's commands name configs as `configs/NAME.py` (`af-jax train --config`, `af-jax
prepare --mix`). In a checkout that is a file in the working folder; a wheel installs the same
files as `af_jax/configs/NAME.py`, so that a `pip install` user's copy of a README command runs
unchanged from any folder. `resolve` reads a file the user has first (their own path always
wins) and falls back to the shipped copy only for a path spelled `configs/NAME.py`.
"""

import argparse
import ast
import logging
import os
import pathlib
import sys

from af_jax import configs as shipped_configs

SHIPPED = pathlib.Path(shipped_configs.__file__).parent
# How the README and `--help` texts spell a shipped config, whatever the working folder.
PREFIX = pathlib.Path("configs")


def shipped() -> list[str]:
  """The shipped configs' file names (`boot.py`, ...), sorted."""
  return sorted(p.name for p in SHIPPED.glob("*.py") if p.name != "__init__.py")


def resolve(path: str) -> pathlib.Path:
  """The config file `path` names: `path` itself when it is a file, else (for a path
  `configs/NAME.py`) the shipped `af_jax/configs/NAME.py`, logged; ValueError otherwise,
  naming the path and listing the shipped configs."""
  given = pathlib.Path(path)
  if given.is_file():
    return given
  if given.parent == PREFIX and given.name in shipped():
    logging.getLogger(__name__).info("config: %s (shipped with af_jax; there is no %s in %s)",
                                     SHIPPED / given.name, path, os.getcwd())
    return SHIPPED / given.name
  names = ", ".join(str(PREFIX / name) for name in shipped())
  raise ValueError(f"config file {path} not found (working folder {os.getcwd()}); the configs "
                   f"shipped with af_jax, found so from any folder, are {names} (`af-jax "
                   "configs` describes them)")


def _first_line(path: pathlib.Path) -> str:
  """The first line of the module docstring of `path`, read without importing it."""
  doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
  return doc.strip().splitlines()[0] if doc.strip() else ""


def main(argv: list[str]) -> int:
  """`af-jax configs`: one line per shipped config."""
  argparse.ArgumentParser(prog="af-jax configs", description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
  print(f"Configs shipped with af_jax (in {SHIPPED}); `--config configs/NAME.py` finds them "
        "from any folder, unless the working folder has its own configs/NAME.py:")
  names = shipped()
  width = max(len(str(PREFIX / name)) for name in names)
  for name in names:
    print(f"  {str(PREFIX / name):<{width}}  {_first_line(SHIPPED / name)}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

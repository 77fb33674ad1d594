"""Every `af-jax VERB --flag ...` printed by the code (docstrings, messages) or the README names a
verb that exists and flags that verb has; configs/demo.py's manual route prepares what it reads.
"""

import ast
import pathlib
import re
import shlex

import pytest

from af_jax import cli
from af_jax.commands import prepare
from af_jax.commands import train
from af_jax.configs import demo as demo_config
from conftest import REPO

SOURCES = sorted([*(REPO / "af_jax").rglob("*.py"), *(REPO / "configs").glob("*.py")])
COMMAND = re.compile(r"af-jax ([a-z][\w-]*)([^`\n]*)")
FLAG = re.compile(r"(?<![\w-])--[a-z][\w.-]*")


def _strings(path: pathlib.Path) -> list[str]:
  """The text of every string in a module; an f-string's fields become '{}'."""
  texts = []
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
      texts.append(node.value)
    elif isinstance(node, ast.JoinedStr):
      texts.append("".join(v.value if isinstance(v, ast.Constant) else "{}"
                           for v in node.values))
  return texts


def _printed_commands() -> list[tuple[str, str, str]]:
  """(where, verb, rest of the line) of every `af-jax VERB ...` in the sources and README.md."""
  found = []
  for where, texts in [*((str(p.relative_to(REPO)), _strings(p)) for p in SOURCES),
                       ("README.md", [(REPO / "README.md").read_text()])]:
    for text in texts:
      for match in COMMAND.finditer(text.replace("\\\n", " ")):
        found.append((where, match.group(1), match.group(2)))
  return found


def _usage_flags(verb: str, capsys) -> set[str]:
  """The flags in the usage line of `af-jax VERB --help`, and --help."""
  with pytest.raises(SystemExit):
    cli.main([verb, "--help"])
  usage = capsys.readouterr().out.split("\n\n")[0]
  return {"--help", *FLAG.findall(usage)}


PRINTED = _printed_commands()


def test_printed_commands_are_found():
  verbs = {verb for _, verb, _ in PRINTED}
  assert set(cli.COMMANDS) <= verbs
  assert any(where == "af_jax/input_pipeline.py" and verb == "prepare"
             for where, verb, _ in PRINTED)  # The not-prepared and rebuild messages.


@pytest.mark.parametrize("verb", sorted(cli.COMMANDS))
def test_every_printed_command_has_only_flags_of_its_verb(verb, capsys):
  flags = _usage_flags(verb, capsys)
  bad = [f"{where}: af-jax {verb}{rest}" for where, v, rest in PRINTED if v == verb
         for flag in FLAG.findall(rest)
         if flag not in flags and not (verb == "train" and flag.startswith("--config."))]
  assert not bad, "\n".join(bad)


def test_every_printed_verb_exists():
  prose = {"VERB"}  # `af-jax <verb> --help` and the like are not matched at all.
  unknown = {f"{where}: af-jax {verb}" for where, verb, _ in PRINTED
             if verb not in cli.COMMANDS and verb not in prose}
  assert not unknown, unknown


def test_printed_train_commands_parse_their_config_overrides(monkeypatch):
  monkeypatch.chdir(REPO)
  commands = [rest for _, verb, rest in PRINTED if verb == "train" and "--config " in rest
              and "{}" not in rest]
  assert commands
  for rest in commands:
    argv = shlex.split(rest.split("[")[0])
    spec = argv[argv.index("--config") + 1]
    if spec.split(".")[0].isupper():  # A placeholder: CONFIG.py.
      continue
    overrides = [a for a in argv if a.startswith("--config.")]
    # Raises on an argument or field that is not there; reading `stage`, on a missing file.
    assert train.parse_config(spec, overrides).stage in rest, rest


def test_the_manual_route_of_configs_demo_prepares_what_it_trains_on():
  (prepare_line,) = [rest for where, verb, rest in PRINTED
                     if where == "configs/demo.py" and verb == "prepare"]
  args, _, configs = prepare.plan(shlex.split(prepare_line))
  config = demo_config.get_config("boot")
  assert [c.name for c in configs] == [c for source in config.data.sources
                                       for c in source["categories"]]
  assert str(args.data_dir) == config.data.data_dir
  assert {c.size for c in configs} == {config.data.image_size}

"""Progress: a tqdm bar on a terminal, plain lines everywhere else (no redraws in logs)."""

import io

import pytest

from af_jax import progress


class _Terminal(io.StringIO):
  def isatty(self):
    return True


def test_off_a_terminal_it_prints_plain_lines_as_the_total_grows():
  stream = io.StringIO()
  with progress.Progress(0, "prepare demo", stream=stream, every_percent=50) as bar:
    for _ in range(2):  # A builder learns each split's size as it starts it.
      bar.total += 4
      bar.refresh()
      for _ in range(4):
        bar.update(1)
  text = stream.getvalue()
  assert "\r" not in text and "\x1b[" not in text
  lines = text.splitlines()
  assert [line.split(" img")[0] for line in lines[:-1]] == [
      "prepare demo: 2/4", "prepare demo: 4/4", "prepare demo: 8/8"]
  assert lines[-1].startswith("prepare demo: done, 8 img in ")


def test_work_cut_short_is_not_reported_done_and_closing_twice_prints_once():
  stream = io.StringIO()
  with pytest.raises(RuntimeError):
    with progress.Progress(3, "localize", stream=stream, every_seconds=1e9) as bar:
      bar.update(1)
      raise RuntimeError("disk full")
  assert "done" not in stream.getvalue()
  bar = progress.Progress(1, "evaluate", unit="category", stream=stream)
  bar.close()
  bar.close()
  assert stream.getvalue().count("done, 0 category") == 1


def test_on_a_terminal_it_is_a_redrawn_bar():
  stream = _Terminal()
  with progress.Progress(4, "generate", stream=stream) as bar:
    bar.update(4)
  assert "\r" in stream.getvalue() and "4/4" in stream.getvalue()

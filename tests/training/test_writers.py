"""Metric writers: read TensorBoard files back without TF, JSONL round-trip, process 0 only."""

import io
import time
import types
import json
import sys

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from af_jax.training import writers


def read_events(logdir):
  accumulator = event_accumulator.EventAccumulator(
      str(logdir), size_guidance={event_accumulator.IMAGES: 0, event_accumulator.TENSORS: 0})
  accumulator.Reload()
  return accumulator


def decode_png(encoded: bytes) -> np.ndarray:
  image = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_UNCHANGED)
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if image.ndim == 3 else image


def test_tensorboard_scalars_and_images_read_back(tmp_path, bottle_dir):
  photo = cv2.cvtColor(cv2.imread(str(bottle_dir / "test" / "broken_large" / "000.png")),
                       cv2.COLOR_BGR2RGB)
  photo = cv2.resize(photo, (40, 32), interpolation=cv2.INTER_AREA)  # H=32, W=40
  writer = writers.TensorBoardWriter(tmp_path)
  writer.write_scalars(1, {"loss": 0.5, "lr": np.float32(2e-4)})
  writer.write_scalars(2, {"loss": jnp.asarray(0.25)})
  writer.write_images(2, {"photo": photo,
                          "batch": np.stack([photo, photo[::-1]]).astype(np.float32) / 255,
                          "heatmap": np.linspace(0, 1, 32 * 40).reshape(1, 32, 40, 1)})
  writer.close()

  events = read_events(tmp_path)
  assert [(s.step, s.value) for s in events.Scalars("loss")] == [(1, 0.5), (2, 0.25)]
  assert events.Scalars("lr")[0].value == pytest.approx(2e-4)
  assert sorted(events.Tags()["images"]) == ["batch/0", "batch/1", "heatmap", "photo"]
  photo_event = events.Images("photo")[0]
  assert (photo_event.step, photo_event.height, photo_event.width) == (2, 32, 40)
  np.testing.assert_array_equal(decode_png(photo_event.encoded_image_string), photo)
  flipped = decode_png(events.Images("batch/1")[0].encoded_image_string)
  np.testing.assert_array_equal(flipped, photo[::-1])  # float [0, 1] -> uint8 exactly
  gray = decode_png(events.Images("heatmap")[0].encoded_image_string)
  assert gray.shape[:2] == (32, 40) and gray[0, 0].max() == 0 and gray[-1, -1].min() == 255
  assert "tensorflow" not in sys.modules


def test_bad_images_and_scalars_are_rejected(tmp_path):
  writer = writers.TensorBoardWriter(tmp_path)
  with pytest.raises(ValueError, match="'mask'.*C in"):
    writer.write_images(0, {"mask": np.zeros((4, 4))})
  with pytest.raises(ValueError, match="'ids'.*dtype int64"):
    writer.write_images(0, {"ids": np.zeros((4, 4, 3), np.int64)})
  with pytest.raises(ValueError, match="scalar"):
    writer.write_scalars(0, {"loss": np.zeros(3)})
  writer.close()


def test_jsonl_round_trip(tmp_path):
  path = tmp_path / "run" / "metrics.jsonl"
  writer = writers.JsonlWriter(path)
  writer.write_scalars(5, {"loss": np.float32(1.5), "step_time": 0.1})
  writer.write_images(5, {"samples": np.zeros((2, 8, 8, 3), np.uint8)})
  writer.close()
  records = [json.loads(line) for line in path.read_text().splitlines()]
  assert records == [
      {"kind": "scalars", "step": 5, "values": {"loss": 1.5, "step_time": 0.1}},
      {"kind": "images", "step": 5, "values": {"samples": [2, 8, 8, 3]}},
  ]


def test_default_writer_writes_everything_on_process_zero(tmp_path, caplog):
  writer = writers.create_default_writer(tmp_path)
  with caplog.at_level("INFO"):
    writer.write_scalars(7, {"loss": 0.125})
  writer.close()
  assert "[7] loss=0.125" in caplog.text
  assert read_events(tmp_path).Scalars("loss")[0].value == 0.125
  record = json.loads((tmp_path / "metrics.jsonl").read_text())
  assert record == {"kind": "scalars", "step": 7, "values": {"loss": 0.125}}


def test_default_writer_just_logging_writes_no_files(tmp_path, caplog):
  writer = writers.create_default_writer(tmp_path / "logs", just_logging=True)
  with caplog.at_level("INFO"):
    writer.write_scalars(1, {"loss": 2.0})
  writer.close()
  assert "[1] loss=2" in caplog.text
  assert not (tmp_path / "logs").exists()


def test_default_writer_is_silent_on_other_processes(tmp_path, caplog, monkeypatch):
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  writer = writers.create_default_writer(tmp_path / "logs")
  with caplog.at_level("INFO"):
    writer.write_scalars(1, {"loss": 2.0})
  writer.close()
  assert not (tmp_path / "logs").exists()
  assert "loss" not in caplog.text


def test_progress_line(monkeypatch):
  clock = iter([100.0, 110.0])
  # Only the writers module sees the fake clock (JAX itself reads time.monotonic too).
  monkeypatch.setattr(writers, "time", types.SimpleNamespace(monotonic=lambda: next(clock),
                                                             time=time.time))
  stream = io.StringIO()
  progress = writers.ProgressLine(1000, metric_names=["loss_g", "loss_d"], stream=stream)
  first = progress.update(100, {"loss_d": 0.5, "loss_g": 1.25, "other": 3.0}, 64.0)
  # 100 more steps took 10 s, so the remaining 800 steps take 80 s.
  second = progress.update(200, {"loss_g": jnp.asarray(1.0)}, images_per_sec=70.0)
  assert first == "step 100/1000 (10.0%) | 64.0 img/s | loss_g 1.25 loss_d 0.5 | ETA ?"
  assert second == "step 200/1000 (20.0%) | 70.0 img/s | loss_g 1 | ETA 0:01:20"
  assert stream.getvalue().splitlines() == [first, second]

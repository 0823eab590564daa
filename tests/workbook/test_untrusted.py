"""Files a learner's process could write are read without blocking, without limit or trust."""

from __future__ import annotations

import os

from workbook.judge.untrusted import read_capped, read_json_object


def test_a_fifo_does_not_block(tmp_path):
    fifo = tmp_path / "report.json"
    os.mkfifo(fifo)
    assert read_capped(fifo) is None and read_json_object(fifo) == {}


def test_a_symlink_is_not_followed(tmp_path):
    secret = tmp_path / "elsewhere.json"
    secret.write_text('{"tasks": {"1": {"passed": 9}}}')
    (tmp_path / "report.json").symlink_to(secret)
    assert read_json_object(tmp_path / "report.json") == {}


def test_too_big_deep_or_wrong_shapes_give_nothing(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    assert read_json_object(path) == {}
    path.write_text('["not", "an", "object"]')
    assert read_json_object(path) == {}
    path.write_text(" " * 2000)
    assert read_capped(path, limit=1000) is None
    path.write_text('{"step": 1}')
    assert read_json_object(path) == {"step": 1}

"""Progress: plain lines when stderr is not a terminal."""

import io

from saseg.progress import PlainProgress, plural, progress_bar


def test_plain_lines_have_counts_rate_and_postfix():
    stream = io.StringIO()
    bar = PlainProgress(total=4, desc="score", unit="frame", every=0.0, stream=stream)
    bar.update(2)
    bar.set_postfix(loss="0.5")
    bar.update(2)
    bar.close()
    bar.close()  # closing twice prints once
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in stream.getvalue()
    assert lines[0].startswith("score: 2/4 frames (50%, ") and lines[-1].endswith("frames/s) loss=0.5")


def test_iteration_and_quiet_mode(capsys):
    stream = io.StringIO()
    assert list(PlainProgress(range(3), desc="x", every=1e9, stream=stream)) == [0, 1, 2]
    assert stream.getvalue().startswith("x: 3/3 its (100%")
    assert list(progress_bar(range(2), enabled=False)) == [0, 1]
    assert capsys.readouterr().err == ""


def test_not_a_terminal_gives_plain_progress(monkeypatch):
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert isinstance(progress_bar(total=3, desc="d"), PlainProgress)


def test_units_take_their_english_plural():
    assert [plural(u) for u in ("frame", "batch", "epoch", "it", "pass", "box")] == [
        "frames", "batches", "epochs", "its", "passes", "boxes"]

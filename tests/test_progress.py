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


def test_plain_progress_lines_in_training_carry_the_same_epochs_figures(monkeypatch, tmp_path):
    """#23 item 8: "train: 5/8 epochs ... val_miou=" showed epoch 4's value."""
    import re

    from saseg.data import open_dataset
    from saseg.models.train import train

    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    monkeypatch.setitem(PlainProgress.__init__.__kwdefaults__, "every", 0.0)  # a line per update
    result = train(open_dataset("synthetic:n=8,seed=1,size=64x48,split=train"), tmp_path / "m",
                   val_data=open_dataset("synthetic:n=4,seed=2,size=64x48,split=val"), arch="small",
                   arch_kwargs={"width": 8, "d": 16}, epochs=3, batch_size=4, lr=3e-3, seed=0, progress=True)
    lines = [l for l in stream.getvalue().splitlines() if l.startswith("train: ")]
    shown = {int(m.group(1)): (m.group(2), m.group(3)) for m in
             (re.match(r"train: (\d+)/3 epochs .* train_loss=([0-9.]+), val_miou=([0-9.]+)", l)
              for l in lines) if m}
    assert set(shown) == {1, 2, 3}, lines
    for epoch, values in shown.items():
        row = result.history[epoch - 1]
        assert values == (f"{row['train_loss']:.3f}", f"{row['val_miou']:.3f}"), (epoch, lines)

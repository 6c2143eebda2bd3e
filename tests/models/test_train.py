import importlib

import numpy as np
import pandas as pd
import pytest
import torch

from saseg.data.base import Frame, InMemoryDataset
from saseg.data.classes import from_names
from saseg.errors import DataError, FormatError, ModelError
from saseg.models import load_model, train
from saseg.models.augment import augment_pair, jitter_color
from saseg.models.train import dataset_confusion, median_frequency_weights

train_mod = importlib.import_module("saseg.models.train")  # the package attribute is the function
CLASSES = from_names(["dark", "bright"], ignore_index=255)
NET = {"width": 8, "d": 8}


def make_data(n=8, h=32, w=32, seed=0, ignore=True):
    """Bright rectangles (class 1) on a dark background (class 0), a few ignored pixels."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        label = np.zeros((h, w), np.int64)
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        label[y0:y0 + h // 2, x0:x0 + w // 2] = 1
        image = np.where(label[..., None] == 1, 220, 30) + rng.integers(-20, 20, (h, w, 3))
        if ignore:
            label[0, :4] = 255
        frames.append(Frame(f"f{i}", i, image.clip(0, 255).astype(np.uint8), label))
    return InMemoryDataset(frames, CLASSES)


def run(tmp, data, **kw):
    args = dict(arch="small", arch_kwargs=NET, epochs=1, batch_size=4, lr=1e-2, crop_size=(24, 24),
                progress=False, seed=3)
    return train(data, tmp, **{**args, **kw})


def states_equal(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_loss_decreases_and_val_miou_matches_brute_force(tmp_path):
    data, val = make_data(8), make_data(4, seed=1)
    res = run(tmp_path, data, val_data=val, epochs=6, lr=2e-2, val_every=4)
    losses = [r["train_loss"] for r in res.history]
    assert losses[-1] < 0.7 * losses[0]
    hist = pd.read_csv(tmp_path / "history.csv")
    assert list(hist["epoch"]) == list(range(1, 7))
    assert {"train_loss", "val_miou", "iou_dark", "iou_bright", "seconds"} <= set(hist.columns)
    assert list(hist["val_miou"].notna()) == [False, False, False, True, False, True]
    # Brute-force mIoU of the saved checkpoint on the validation frames.
    lm = load_model(tmp_path)
    inter, union = np.zeros(2), np.zeros(2)
    for f in val:
        with torch.no_grad():
            pred = lm.net(lm.preprocess([f.image])).argmax(1)[0].numpy()
        keep = f.label != 255
        for c in range(2):
            inter[c] += np.sum((pred == c) & (f.label == c) & keep)
            union[c] += np.sum(((pred == c) | (f.label == c)) & keep)
    assert res.val_miou == pytest.approx(np.mean(inter / union))
    assert lm.config["input_size"] == [32, 32] and lm.config["trained_epochs"] == 6


def test_same_seed_same_weights(tmp_path):
    data = make_data(6)
    run(tmp_path / "a", data)
    run(tmp_path / "b", data)
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=True)
    assert states_equal(a, b)
    run(tmp_path / "c", data, seed=4)
    assert not states_equal(a, torch.load(tmp_path / "c" / "model.pt", weights_only=True))


def test_resume_after_kill_equals_uninterrupted_run(tmp_path, monkeypatch):
    data = make_data(6)
    run(tmp_path / "full", data, epochs=2)

    real_save = train_mod._save_epoch

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "_save_epoch", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed", data, epochs=2)
    monkeypatch.setattr(train_mod, "_save_epoch", real_save)
    res = run(tmp_path / "killed", data, epochs=2)
    assert res.epochs == 2 and [r["epoch"] for r in res.history] == [1, 2]
    full = torch.load(tmp_path / "full" / "model.pt", weights_only=True)
    assert states_equal(full, torch.load(tmp_path / "killed" / "model.pt", weights_only=True))
    state = torch.load(tmp_path / "killed" / "train_state.pt", weights_only=True)
    assert state["epoch"] == 2
    refused = r"train_state.pt: .*same training settings.*lr: 0.01 -> 0.001; pass resume=False"
    with pytest.raises(FormatError, match=refused):
        run(tmp_path / "killed", data, epochs=2, lr=1e-3)
    # the same number of frames, other content (e.g. another generator seed): refused too
    with pytest.raises(FormatError, match=r"train_sha256: \"[0-9a-f]+\.* -> \"[0-9a-f]+"):
        run(tmp_path / "killed", make_data(6, seed=1), epochs=3)
    (tmp_path / "killed" / "train_state.pt").write_bytes(b"junk")
    with pytest.raises(FormatError, match="train_state.pt"):
        run(tmp_path / "killed", data, epochs=2)
    run(tmp_path / "killed", data, epochs=2, resume=False)  # starts over, ignoring the junk


def test_median_frequency_weights_brute_force():
    rng = np.random.default_rng(0)
    labels = [rng.choice([0, 1, 3, 255], size=(5, 7), p=[0.6, 0.3, 0.05, 0.05]) for _ in range(4)]
    labels[0][:] = 2  # class 2 only in one image
    freq = []
    for c in range(5):
        pix = sum(np.sum(lab == c) for lab in labels)
        tot = sum(np.sum((lab >= 0) & (lab < 5)) for lab in labels if np.any(lab == c))
        freq.append(pix / tot if pix else 0.0)
    med = np.median([f for f in freq if f > 0])
    ref = [med / f if f > 0 else 0.0 for f in freq]
    got = median_frequency_weights([torch.from_numpy(lab) for lab in labels], 5)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-6)


def test_augment_keeps_image_and_label_aligned():
    g = torch.Generator().manual_seed(0)
    label = torch.zeros(40, 50, dtype=torch.long)
    label[5:30, 10:35] = 1
    label[20:38, 30:48] = 2
    image = label.float().expand(3, -1, -1) * 10.0
    for _ in range(10):
        img, lab = augment_pair(image, label, crop_size=(32, 32), scale_range=(0.6, 1.6), hflip=True,
                                ignore_index=-100, generator=g)
        assert img.shape == (3, 32, 32) and lab.shape == (32, 32)
        # Where the label's 3x3 neighbourhood is constant, bilinear image values equal label * 10.
        pad = torch.nn.functional.pad(lab[None, None].float(), (1, 1, 1, 1), mode="replicate")
        lo = -torch.nn.functional.max_pool2d(-pad, 3, stride=1)[0, 0]
        hi = torch.nn.functional.max_pool2d(pad, 3, stride=1)[0, 0]
        inside = (lo == hi) & (lab >= 0)
        torch.testing.assert_close(img[0][inside], lab[inside].float() * 10, atol=1e-4, rtol=0)


def test_augment_identity_crop_flip_and_padding():
    g = torch.Generator().manual_seed(1)
    image = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2 * 3, 4, 5)[:3]
    label = torch.arange(20).reshape(4, 5)
    img, lab = augment_pair(image, label, crop_size=(3, 3), generator=g)
    # Unscaled, unflipped: a window of the input at the same offset for image and label.
    matches = [(t, l) for t in range(2) for l in range(3) if torch.equal(lab, label[t:t + 3, l:l + 3])]
    assert len(matches) == 1
    t, l = matches[0]
    assert torch.equal(img, image[:, t:t + 3, l:l + 3])
    flips = set()
    for _ in range(20):
        img, lab = augment_pair(image, label, crop_size=None, hflip=True, generator=g)
        flips.add(torch.equal(lab, label.flip(-1)) and torch.equal(img, image.flip(-1)))
        assert torch.equal(lab, label) or torch.equal(lab, label.flip(-1))
    assert flips == {True, False}
    img, lab = augment_pair(image, label, crop_size=(6, 7), ignore_index=-5, generator=g)
    assert torch.equal(lab[:4, :5], label) and (lab[4:] == -5).all() and (lab[:, 5:] == -5).all()
    assert torch.equal(img[:, :4, :5], image) and (img[:, 4:] == 0).all()


def test_jitter_color_matches_per_pixel_reference():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (3, 4, 5)).astype(np.float32)
    out = jitter_color(torch.from_numpy(image), 0.4, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    b, c, s = (0.6 + 0.8 * float(torch.rand((), generator=g)) for _ in range(3))
    luma = lambda px: 0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2]  # noqa: E731
    bright = image * b
    mean = np.mean([luma(bright[:, y, x]) for y in range(4) for x in range(5)])
    expected = np.empty_like(image)
    for y in range(4):
        for x in range(5):
            px = (bright[:, y, x] - mean) * c + mean
            expected[:, y, x] = np.clip(luma(px) + (px - luma(px)) * s, 0, 1)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)
    assert not np.allclose(out.numpy(), image)
    same = jitter_color(torch.from_numpy(image), 0.0, generator=torch.Generator().manual_seed(7))
    np.testing.assert_allclose(same.numpy(), image, atol=1e-6)


def test_color_jitter_trains_reproducibly_and_is_checked(tmp_path):
    data = make_data(8)
    a = run(tmp_path / "a", data, color_jitter=0.3)
    b = run(tmp_path / "b", data, color_jitter=0.3)
    c = run(tmp_path / "c", data)
    wa, wb, wc = (torch.load(r.out_dir / "model.pt", weights_only=True) for r in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    with pytest.raises(ModelError, match="color_jitter"):
        run(tmp_path / "d", data, color_jitter=1.5)


def test_bad_training_inputs(tmp_path):
    data = make_data(4)
    unlabelled = InMemoryDataset([Frame("u", 0, data[0].image, None)], CLASSES)
    with pytest.raises(DataError, match="'u' has no label"):
        run(tmp_path, unlabelled)
    bad = InMemoryDataset([Frame("b", 0, data[0].image, np.full((32, 32), 7))], CLASSES)
    with pytest.raises(DataError, match=r"\[7\]"):
        run(tmp_path, bad)
    wrong = InMemoryDataset([Frame("w", 0, data[0].image, np.zeros((8, 8), np.int64))], CLASSES)
    with pytest.raises(DataError, match="label of image size"):
        run(tmp_path, wrong)
    mixed = InMemoryDataset([data[0], make_data(1, h=24)[0]], CLASSES)
    with pytest.raises(DataError, match="differ in size"):
        run(tmp_path, mixed, crop_size=None)
    with pytest.raises(DataError, match="at least one"):
        run(tmp_path, InMemoryDataset([], CLASSES))
    other = InMemoryDataset(data.frames, from_names(["a", "b"]))
    with pytest.raises(DataError, match="classes of train_data"):
        run(tmp_path, data, val_data=other)
    with pytest.raises(ModelError, match="class_weights"):
        run(tmp_path, data, class_weights="inverse")
    with pytest.raises(ModelError, match="2 class weights"):
        run(tmp_path, data, class_weights=[1.0, 2.0, 3.0])
    with pytest.raises(ModelError, match="epochs"):
        run(tmp_path, data, epochs=0)


def test_class_weights_resize_and_mixed_sizes_train(tmp_path):
    mixed = InMemoryDataset([*make_data(3).frames, *make_data(3, h=24, w=40, seed=2).frames], CLASSES)
    res = run(tmp_path / "a", mixed, class_weights="median_freq", crop_size=(16, 16))
    assert res.epochs == 1 and load_model(tmp_path / "a").config["input_size"] is None
    run(tmp_path / "b", mixed, image_size=(16, 24), crop_size=None, class_weights=[1.0, 2.0])
    assert load_model(tmp_path / "b").config["input_size"] == [16, 24]


def test_sqrt_median_freq_is_the_square_root_of_median_freq(tmp_path):
    frames = train_mod._Frames(make_data(4), None, "data")
    full = median_frequency_weights(frames.labels, 2)
    torch.testing.assert_close(train_mod._class_weights("sqrt_median_freq", frames, 2), full.sqrt())
    torch.testing.assert_close(train_mod._class_weights("median_freq", frames, 2), full)
    with pytest.raises(ModelError, match="sqrt_median_freq"):
        run(tmp_path, make_data(4), class_weights="inverse")


def test_training_leaves_the_callers_rng_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run(tmp_path, make_data(4))
    assert torch.equal(torch.rand(3), expected)


def test_dataset_confusion_matches_per_frame_brute_force(tmp_path):
    run(tmp_path, make_data(6), epochs=2)
    # Two image sizes, interleaved: batches of 3 split into one forward per size.
    mixed = InMemoryDataset([f for pair in zip(make_data(3, seed=5).frames, make_data(3, h=24, w=40, seed=6).frames)
                             for f in pair], CLASSES)
    lm = load_model(tmp_path)
    inter, union, tp_fn = np.zeros(2), np.zeros(2), np.zeros((2, 2), np.int64)
    for f in mixed:
        with torch.no_grad():
            pred = lm.net(lm.preprocess([f.image])).argmax(1)[0].numpy()
        keep = f.label != 255
        for c in range(2):
            inter[c] += np.sum((pred == c) & (f.label == c) & keep)
            union[c] += np.sum(((pred == c) | (f.label == c)) & keep)
            for k in range(2):
                tp_fn[c, k] += np.sum((f.label == c) & (pred == k) & keep)
    for model in (tmp_path, lm):
        cm = dataset_confusion(model, mixed, batch_size=3)
        np.testing.assert_array_equal(cm.matrix.numpy(), tp_fn)
        np.testing.assert_allclose(cm.compute().numpy(), inter / union)
        assert cm.miou() == pytest.approx(np.mean(inter / union))
    # Labels coarser than the image: logits are resized (bilinear) to the label first.
    f = mixed[0]
    coarse = InMemoryDataset([Frame("c", 0, f.image, f.label[::2, ::2])], CLASSES)
    with torch.no_grad():
        logits = lm.net(lm.preprocess([f.image]))
    pred = torch.nn.functional.interpolate(logits, size=(16, 16), mode="bilinear", align_corners=False).argmax(1)
    keep = f.label[::2, ::2] != 255
    expected = [np.sum((pred[0].numpy() == c) & (f.label[::2, ::2] == k) & keep) for k in range(2) for c in range(2)]
    np.testing.assert_array_equal(dataset_confusion(lm, coarse).matrix.numpy().ravel(), expected)
    with pytest.raises(DataError, match="'u' has no label"):
        dataset_confusion(lm, InMemoryDataset([Frame("u", 0, mixed[0].image, None)], CLASSES))

"""Data sets: shapes, dtypes, seeding, no global-RNG side effects, disjoint splits, generator overrides."""

import random

import numpy as np
import pytest
import torch

from ella_lab.data import Splits, digits, loaders, mnist1d, toy_regression


def _rows(x: torch.Tensor) -> set:
    return {tuple(r) for r in x.numpy().round(6).tolist()}


@pytest.fixture(scope="module")
def small():
    return mnist1d(num_test=200)


def test_mnist1d_shapes_dtypes(small):
    assert isinstance(small, Splits)
    assert small.num_classes == 10 and small.input_shape == (40,)
    for ds, n in ((small.train, 3500), (small.val, 500), (small.test, 200)):
        x, y = ds.tensors
        assert x.shape == (n, 40) and x.dtype == torch.float32
        assert y.shape == (n,) and y.dtype == torch.int64
        assert int(y.min()) >= 0 and int(y.max()) < 10


def test_mnist1d_standard_split_matches_make_dataset(small):
    from mnist1d.data import get_dataset_args, make_dataset

    state = np.random.get_state()
    ref = make_dataset(get_dataset_args())
    np.random.set_state(state)
    assert np.array_equal(small.train.tensors[0].numpy(), ref["x"][:3500].astype(np.float32))
    assert np.array_equal(small.train.tensors[1].numpy(), ref["y"][:3500])
    assert np.array_equal(small.val.tensors[0].numpy(), ref["x"][3500:4000].astype(np.float32))
    assert np.array_equal(small.val.tensors[1].numpy(), ref["y"][3500:4000])


def test_mnist1d_deterministic_and_test_seed(small):
    again = mnist1d(num_test=200)
    for a, b in ((small.train, again.train), (small.val, again.val), (small.test, again.test)):
        assert all(torch.equal(s, t) for s, t in zip(a.tensors, b.tensors))
    other = mnist1d(num_test=200, test_seed=2)
    assert torch.equal(other.train.tensors[0], small.train.tensors[0])
    assert not torch.equal(other.test.tensors[0], small.test.tensors[0])


def test_mnist1d_leaves_global_rng_untouched():
    np.random.seed(123)
    random.seed(7)
    np_before, py_before = np.random.get_state(), random.getstate()
    torch_before = torch.get_rng_state()
    mnist1d(num_train=100, num_val=50, num_test=20)
    np_after = np.random.get_state()
    assert np.array_equal(np_before[1], np_after[1]) and np_before[2] == np_after[2]
    assert random.getstate() == py_before
    assert torch.equal(torch.get_rng_state(), torch_before)


def test_mnist1d_splits_disjoint(small):
    train, val, test = (_rows(ds.tensors[0]) for ds in (small.train, small.val, small.test))
    assert len(train) == 3500 and len(val) == 500
    assert not train & val
    assert not (train | val) & test


def test_mnist1d_test_normalised_like_train(small):
    x = small.test.tensors[0]
    assert abs(float(x.mean())) < 0.15 and 0.85 < float(x.std()) < 1.15
    assert small.meta["normalisation"]["std"] > 0


def test_mnist1d_generator_overrides_change_test_only(small):
    noisy = mnist1d(num_test=200, iid_noise_scale=0.2)
    assert torch.equal(noisy.train.tensors[0], small.train.tensors[0])
    assert torch.equal(noisy.test.tensors[1], small.test.tensors[1])  # same labels: same seed
    assert not torch.equal(noisy.test.tensors[0], small.test.tensors[0])
    # Shared normalisation: the extra noise shows up as extra variance instead of being standardised away.
    assert float(noisy.test.tensors[0].std()) > 1.2 * float(small.test.tensors[0].std())
    shuffled = mnist1d(num_test=200, shuffle_seq=True)
    assert not torch.equal(shuffled.test.tensors[0], small.test.tensors[0])
    assert noisy.meta["test_generator_args"]["iid_noise_scale"] == 0.2


def test_mnist1d_odd_test_size():
    data = mnist1d(num_train=10, num_val=10, num_test=15)
    assert len(data.train) == 10 and len(data.val) == 10 and len(data.test) == 15


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"bogus_noise": 1.0}, "bogus_noise"),
        ({"seed": 3, "test_seed": 3}, "test_seed"),
        ({"num_train": 3900, "num_val": 500}, "num_train"),
        ({"num_test": 0}, "num_test"),
        ({"final_seq_length": 60}, "final_seq_length"),
    ],
)
def test_mnist1d_bad_input(kwargs, name):
    with pytest.raises(ValueError, match=name):
        mnist1d(**kwargs)


def test_loaders_seeded(small):
    train, val, test = loaders(small, batch_size=64, seed=3)
    x1, _ = next(iter(train))
    assert x1.shape == (64, 40)
    x2, _ = next(iter(loaders(small, batch_size=64, seed=3)[0]))
    x3, _ = next(iter(loaders(small, batch_size=64, seed=4)[0]))
    assert torch.equal(x1, x2) and not torch.equal(x1, x3)
    assert torch.equal(next(iter(val))[0], small.val.tensors[0][:64])
    assert torch.equal(next(iter(test))[0], small.test.tensors[0][:64])
    assert sum(len(b[0]) for b in train) == 3500
    with pytest.raises(TypeError, match="splits"):
        loaders("not splits")
    with pytest.raises(ValueError, match="batch_size"):
        loaders(small, batch_size=0)


def test_digits():
    data = digits(seed=0)
    assert data.num_classes == 10 and data.input_shape == (64,)
    sizes = [len(ds) for ds in (data.train, data.val, data.test)]
    assert sum(sizes) == 1797 and sizes[2] == pytest.approx(0.25 * 1797, abs=2)
    for ds in (data.train, data.val, data.test):
        x, y = ds.tensors
        assert x.dtype == torch.float32 and x.shape[1] == 64 and y.dtype == torch.int64
        assert set(y.tolist()) == set(range(10))
    x = data.train.tensors[0]
    assert x.mean(0).abs().max() < 1e-4
    again, other = digits(seed=0), digits(seed=1)
    assert torch.equal(again.test.tensors[0], data.test.tensors[0])
    assert not torch.equal(other.test.tensors[0], data.test.tensors[0])
    with pytest.raises(ValueError, match="test_fraction"):
        digits(val_fraction=0.5, test_fraction=0.5)


def test_toy_regression():
    data = toy_regression(seed=0)
    assert data.num_classes is None and data.input_shape == (1,)
    for ds, n in ((data.train, 100), (data.val, 50), (data.test, 300)):
        x, y = ds.tensors
        assert x.shape == (n, 1) and y.shape == (n, 1)
        assert x.dtype == torch.float32 and y.dtype == torch.float32
    x_train = data.train.tensors[0]
    assert (x_train.abs() >= 0.3 - 1e-6).all() and (x_train.abs() <= 1.0 + 1e-6).all()
    assert (x_train < 0).any() and (x_train > 0).any()
    x_test = data.test.tensors[0]
    assert float(x_test.min()) == pytest.approx(-1.5) and float(x_test.max()) == pytest.approx(1.5)
    resid = data.train.tensors[1] - torch.sin(3 * x_train)
    assert 0.05 < float(resid.std()) < 0.2
    again, other = toy_regression(seed=0), toy_regression(seed=1)
    assert torch.equal(again.train.tensors[0], x_train) and torch.equal(again.test.tensors[1], data.test.tensors[1])
    assert not torch.equal(other.train.tensors[0], x_train)
    with pytest.raises(ValueError, match="gap"):
        toy_regression(gap=2.0)


# ------------------------------------------------------------------ image files (idx), Fashion-MNIST
def _write_idx(path, array: np.ndarray, compress: bool = False) -> None:
    import gzip
    import struct

    header = struct.pack(">I", 0x0800 + array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def _fake_fashion(folder, n_train=60, n_test=20, compress=True):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if compress else ""
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        arrays[prefix] = (rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n))
        _write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", arrays[prefix][0], compress)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", arrays[prefix][1], compress)
    return arrays


def test_idx_files_are_read_exactly_and_malformed_ones_refused(tmp_path):
    from ella_lab.data.images import read_idx

    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a", a)
    _write_idx(tmp_path / "a.gz", a, compress=True)
    assert np.array_equal(read_idx(tmp_path / "a"), a) and np.array_equal(read_idx(tmp_path / "a.gz"), a)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="not an idx file"):
        read_idx(tmp_path / "bad")
    _write_idx(tmp_path / "short", a)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(ValueError, match="malformed"):
        read_idx(tmp_path / "short")


def test_fashion_mnist_from_idx_files_standardised_and_disjoint(tmp_path):
    from ella_lab.data.images import image_dataset

    arrays = _fake_fashion(tmp_path / "FashionMNIST" / "raw")  # torchvision's layout, gzip-compressed
    s = image_dataset("fashionmnist", tmp_path, num_train=40, num_val=15, num_test=20, seed=3)
    assert s.input_shape == (1, 28, 28) and s.num_classes == 10 and len(s.train) == 40 and len(s.val) == 15
    x = s.train.tensors[0]
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std()) - 1) < 1e-2  # standardised with the training subset
    assert not (_rows(s.train.tensors[0].flatten(1)) & _rows(s.val.tensors[0].flatten(1)))
    # the test images are the test file's, in a seeded order: undo the standardisation and find each one
    pixels = (s.test.tensors[0][:, 0].double() * s.meta["std"][0] + s.meta["mean"][0]) * 255
    test_images = arrays["t10k"][0]
    for image, label in zip(pixels.round().numpy(), s.test.tensors[1].numpy()):
        match = np.nonzero((test_images == image).all((1, 2)))[0]
        assert len(match) == 1 and arrays["t10k"][1][match[0]] == label
    again = image_dataset("fashionmnist", tmp_path, num_train=40, num_val=15, num_test=20, seed=3)
    assert torch.equal(again.train.tensors[0], x)


def test_missing_fashion_mnist_names_the_debian_package(tmp_path, monkeypatch):
    from ella_lab.data import images

    monkeypatch.setattr(images, "DEBIAN_FASHION_MNIST", tmp_path / "none")
    with pytest.raises(images.DataUnavailable, match="apt-get install dataset-fashion-mnist"):
        images.image_dataset("fashionmnist")
    with pytest.raises(images.DataUnavailable, match="MNIST needs `data_root`"):
        images.image_dataset("mnist")
    _fake_fashion(tmp_path / "none", compress=False)  # the package's folder, plain files: read without a root
    assert len(images.image_dataset("fashionmnist", num_train=30, num_val=5, num_test=10).train) == 30


@pytest.mark.skipif(
    not __import__("pathlib").Path("/usr/share/datasets/fashion-mnist").is_dir(),
    reason="the Debian package dataset-fashion-mnist is not installed",
)
def test_the_debian_package_is_the_real_data_set():
    from ella_lab.data.images import image_dataset

    s = image_dataset("fashionmnist", num_train=54000, num_val=6000, num_test=10000)
    assert (len(s.train), len(s.val), len(s.test)) == (54000, 6000, 10000) and s.num_classes == 10
    assert torch.bincount(s.test.tensors[1], minlength=10).tolist() == [1000] * 10  # the balanced test split

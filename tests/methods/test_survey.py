"""ella.methods.survey: the door pass checks every batch and samples the kernel points uniformly."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from ella.methods.survey import output_rmse, survey

from tests.conftest import tiny_mlp


def loader(x, y, batch_size=16):
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def test_counts_outputs_and_keeps_all_small_training_sets_in_order():
    x = torch.randn(40, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (40,))
    data = survey(tiny_mlp(), "classification", loader(x, y), loader(x[:10], y[:10]), sample_size=100)
    assert (data.num_train, data.num_outputs, data.num_val) == (40, 3, 10)
    assert torch.equal(data.sample, x) and data.output_scale is None
    assert data.input_spec == {"shape": [3], "dtype": "float64"}


def test_reservoir_sample_is_uniform_and_seeded():
    x = torch.arange(1000, dtype=torch.float64)[:, None].expand(1000, 3).contiguous()
    y = torch.zeros(1000, dtype=torch.long)
    counts = torch.zeros(1000)
    for seed in range(200):
        sample = survey(tiny_mlp(), "classification", loader(x, y, 64), sample_size=50, seed=seed).sample
        assert sample.shape == (50, 3) and len(sample[:, 0].unique()) == 50  # without replacement
        counts[sample[:, 0].long()] += 1
    # each of the 1000 rows is kept with probability 50 / 1000: 10 times in 200 draws on average; the first and
    # the last 500 rows are kept equally often (a stream-position bias would show here)
    assert abs(counts[:500].sum() - counts[500:].sum()) < 0.1 * counts.sum()
    again = survey(tiny_mlp(), "classification", loader(x, y, 64), sample_size=50, seed=3).sample
    assert torch.equal(again, survey(tiny_mlp(), "classification", loader(x, y, 128), sample_size=50, seed=3).sample)


def test_regression_scales_are_the_validation_rmse_per_output():
    model = tiny_mlp(out_features=2)
    x, xv = torch.randn(30, 3, dtype=torch.float64), torch.randn(20, 3, dtype=torch.float64)
    y, yv = torch.randn(30, 2, dtype=torch.float64), torch.randn(20, 2, dtype=torch.float64)
    data = survey(model, "regression", loader(x, y), loader(xv, yv))
    expected = (model(xv).detach() - yv).pow(2).mean(0).sqrt()
    assert torch.allclose(data.output_scale, expected, rtol=1e-12)
    rmse = (model(x).detach() - y).pow(2).mean(0).sqrt()
    assert torch.allclose(output_rmse(model, loader(x, y), "train_loader", 2), rmse)


@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda x, y: (x.index_fill(0, torch.tensor([3]), float("nan")), y), "inputs of train_loader` holds nan"),
        (lambda x, y: (x, y[:-1]), "with 15 targets"),
        (lambda x, y: (x, y.float()), "integer tensor of class indices"),
        (lambda x, y: (x.float(), y), None),  # another float dtype than the model's: cast, fine
    ],
)
def test_every_training_batch_is_checked(bad, message):
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randint(0, 3, (16,))
    batch = bad(x, y)
    if message is None:
        survey(tiny_mlp(), "classification", [batch])
        return
    with pytest.raises(ValueError, match=message):
        survey(tiny_mlp(), "classification", [batch])


def test_validation_batches_are_checked_and_empty_loaders_refused():
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randint(0, 3, (16,))
    xv = x.clone()
    xv[0, 0] = float("inf")
    with pytest.raises(ValueError, match="inputs of val_loader"):
        survey(tiny_mlp(), "classification", [(x, y)], [(xv, y)])
    with pytest.raises(ValueError, match="`val_loader` is empty"):
        survey(tiny_mlp(), "classification", [(x, y)], [(x[:0], y[:0])])
    with pytest.raises(ValueError, match="`train_loader` is required"):
        survey(tiny_mlp(), "classification", None)
    with pytest.raises(ValueError, match=r"rows of shape \(4,\)"):
        survey(tiny_mlp(), "classification", [(x, y), (torch.zeros(2, 4, dtype=torch.float64), y[:2])])

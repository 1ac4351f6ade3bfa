"""Reference models: sizes, seeding, input shapes, and laplace-torch's KFAC on the reference CNN."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from ella.utils import num_parameters, seeded_generator
from ella_lab.models import SignalToImage, digits_mlp, mnist1d_cnn, mnist1d_mlp, regression_mlp

from tests.conftest import needs_laplace


@pytest.mark.parametrize(
    "make, in_dim, out_dim, count",
    [
        (mnist1d_cnn, 40, 10, 5210),
        (mnist1d_mlp, 40, 10, 15210),
        (digits_mlp, 64, 10, 3466),
        (regression_mlp, 1, 1, 2701),
    ],
)
def test_model_sizes_and_shapes(make, in_dim, out_dim, count):
    model = make()
    assert num_parameters(model) == count
    assert model(torch.randn(7, in_dim)).shape == (7, out_dim)


def test_cnn_accepts_channel_dim_and_other_dtype():
    model = mnist1d_cnn(num_classes=4).double()
    x = torch.randn(3, 40, dtype=torch.float64)
    assert torch.equal(model(x), model(x.unsqueeze(1)))
    assert model(x).shape == (3, 4) and model(x).dtype == torch.float64
    with pytest.raises(ValueError, match="shape"):
        SignalToImage()(torch.randn(40))


def test_models_seeded_without_touching_global_rng():
    before = torch.get_rng_state()
    a, b, c = mnist1d_cnn(seed=3), mnist1d_cnn(seed=3), mnist1d_cnn(seed=4)
    assert torch.equal(torch.get_rng_state(), before)
    pa, pb, pc = (torch.nn.utils.parameters_to_vector(m.parameters()) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    torch.manual_seed(0)
    d = regression_mlp(seed=None)
    torch.manual_seed(0)
    e = regression_mlp(seed=None)
    assert torch.equal(d[0].weight, e[0].weight)
    with pytest.raises(ValueError, match="seed"):
        mnist1d_mlp(seed=1.5)


@needs_laplace
def test_kfac_laplace_fits_cnn():
    from laplace import Laplace

    g = seeded_generator(0)
    data = TensorDataset(torch.randn(64, 40, generator=g), torch.randint(0, 10, (64,), generator=g))
    model = mnist1d_cnn().eval()
    la = Laplace(model, "classification", subset_of_weights="all", hessian_structure="kron")
    la.fit(DataLoader(data, batch_size=32))
    probs = la(data.tensors[0][:5], link_approx="probit")
    assert probs.shape == (5, 10) and torch.allclose(probs.sum(-1), torch.ones(5), atol=1e-5)

"""The augmentation kernel: two independent views of each clean input, checked; no Gram block."""

import pytest
import torch

from ella.kernels import AugmentationKernel


def test_views_are_two_independent_augmentations_of_the_batch():
    kernel = AugmentationKernel(lambda x: x + torch.randn_like(x))
    assert kernel.paired and kernel.positive_semidefinite and kernel.infer_num_outputs(torch.zeros(2, 3)) == 1
    x = torch.zeros(5, 3)
    torch.manual_seed(0)
    one, two = kernel.views(x)
    assert one.shape == two.shape == (5, 3) and not torch.equal(one, two)  # two draws, not one view twice


def test_bad_augmentations_are_refused_with_the_reason():
    with pytest.raises(TypeError, match="`augment` must be callable"):
        AugmentationKernel("flip")
    with pytest.raises(TypeError, match="has no Gram block: it is known through pairs of views"):
        AugmentationKernel(lambda x: x).gram(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="`augment` must return a tensor batch of 4 views for 4 clean inputs"):
        AugmentationKernel(lambda x: x[:2]).views(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="nan or inf"):
        AugmentationKernel(lambda x: x / 0).views(torch.zeros(4, 2))

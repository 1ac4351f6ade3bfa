"""ella.batches: tuples, dicts and model outputs with logits, through one adapter."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from ella import batches


class DictModel(nn.Module):
    """A model that takes keyword inputs and returns an object with ``logits``, as HuggingFace classifiers do."""

    def __init__(self):
        super().__init__()
        self.embed, self.head = nn.Embedding(10, 4), nn.Linear(4, 3)

    def forward(self, input_ids, attention_mask):
        h = (self.embed(input_ids) * attention_mask[..., None]).sum(1) / attention_mask.sum(1, keepdim=True)
        return SimpleNamespace(logits=self.head(h))


def test_split_batch_reads_tuples_dicts_and_bare_inputs():
    x, y = torch.zeros(4, 2), torch.arange(4)
    assert batches.split_batch((x, y))[1] is y and batches.split_batch([x])[1] is None
    inputs, targets = batches.split_batch({"input_ids": x, "attention_mask": x, "labels": y})
    assert set(inputs) == {"input_ids", "attention_mask"} and targets is y
    with pytest.raises(ValueError, match="3 fields"):
        batches.split_batch((x, y, y))
    with pytest.raises(ValueError, match="'labels'"):
        batches.split_batch({"input_ids": x})
    with pytest.raises(TypeError, match="train_loader"):
        batches.split_batch("text")


def test_dict_inputs_are_taken_concatenated_and_called():
    g = torch.Generator().manual_seed(0)
    x = {"input_ids": torch.randint(0, 10, (5, 7), generator=g), "attention_mask": torch.ones(5, 7)}
    model = DictModel().eval()
    assert batches.check_inputs(x) == 5 and batches.num_rows(x) == 5
    pieces = list(batches.chunks(x, 2))
    assert [batches.num_rows(p) for p in pieces] == [2, 2, 1]
    assert torch.equal(batches.concat(pieces)["input_ids"], x["input_ids"])
    out = batches.outputs(model, x, batch_size=2)
    assert out.shape == (5, 3) and torch.allclose(out, model(**x).logits)
    params = {n: p.detach() * 2 for n, p in model.named_parameters()}
    assert torch.allclose(batches.functional(model, params, x), torch.func.functional_call(model, params, (), x).logits)
    moved = batches.to_model(x, model.double())
    assert moved["input_ids"].dtype == torch.int64 and moved["attention_mask"].dtype == torch.float64


def test_inputs_are_checked_and_compared_with_what_was_fitted():
    with pytest.raises(ValueError, match="nan or inf"):
        batches.check_inputs(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match="batch dimension"):
        batches.check_inputs(torch.tensor(1.0))
    with pytest.raises(ValueError, match="share their batch size"):
        batches.check_inputs({"a": torch.zeros(2, 1), "b": torch.zeros(3, 1)})
    with pytest.raises(TypeError, match="tensor"):
        batches.check_inputs([1, 2])
    spec = batches.spec(torch.zeros(3, 40))
    assert spec == {"shape": [40], "dtype": "float32"}
    batches.check_spec(torch.zeros(1, 40, dtype=torch.float64), spec)  # another float dtype is fine
    with pytest.raises(ValueError, match=r"rows of shape \(\), but the inputs were of shape \(40,\)"):
        batches.check_spec(torch.zeros(40), spec)
    with pytest.raises(ValueError, match="dtype int64"):
        batches.check_spec(torch.zeros(2, 40, dtype=torch.int64), spec)
    example = batches.example({"ids": {"shape": [7], "dtype": "int64"}, "mask": spec}, nn.Linear(1, 1).double())
    assert example["ids"].dtype == torch.int64 and example["mask"].dtype == torch.float64


def test_logits_flattens_tensors_and_reads_logits():
    assert batches.logits(torch.zeros(2, 3, 4)).shape == (2, 12)
    assert batches.logits({"logits": torch.zeros(2, 5)}).shape == (2, 5)
    with pytest.raises(TypeError, match="logits"):
        batches.logits(SimpleNamespace(scores=torch.zeros(2, 5)))


def test_functional_calls_run_on_a_shadow_that_follows_the_model():
    """``functional`` never swaps the model's own weights; its per-thread shadow shares the model's tensors and is
    made again when a module is replaced."""
    import threading

    from ella import batches
    from ella.utils import trainable_parameters

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).eval()
    x = torch.randn(5, 3)
    params = trainable_parameters(model)
    twice = {name: 2 * p for name, p in params.items()}
    calls = []
    hook = model[0].register_forward_pre_hook(lambda m, i: calls.append(m))
    batches.functional(model, twice, x)
    hook.remove()
    assert calls and all(m is not model[0] for m in calls)  # the shadow's layer ran, never the model's own
    shadow = batches.shadow(model)
    assert shadow is not model and shadow[0].weight is model[0].weight  # shared, not copied
    assert batches.shadow(model) is shadow  # kept for this thread
    other = []
    threading.Thread(target=lambda: other.append(batches.shadow(model))).start()
    while not other:
        pass
    assert other[0] is not shadow  # one per thread
    model[1] = torch.nn.ReLU()
    assert isinstance(batches.shadow(model)[1], torch.nn.ReLU)  # a replaced module: a new shadow
    with torch.no_grad():
        assert torch.allclose(batches.functional(model, params, x), model(x))

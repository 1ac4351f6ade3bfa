"""A HuggingFace sequence classifier built from a config (nothing downloaded): ELLA takes its tokenizer-style dict
batches and its ``logits`` outputs as they come. Runs where the ``hf`` extra is installed (``pip install
-e ".[hf]"``)."""

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

transformers = pytest.importorskip("transformers")

from ella import ELLA, evaluate  # noqa: E402
from ella.eigen import NeuralEF  # noqa: E402
from ella.kernels import EmpiricalNTK  # noqa: E402


class Sentences(Dataset):
    """Token ids with padding masks and a label that the first token decides."""

    def __init__(self, n: int, seed: int, length: int = 8, vocab: int = 30):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, vocab, (n, length), generator=g)
        lengths = torch.randint(4, length + 1, (n,), generator=g)
        self.mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
        self.ids = self.ids * self.mask
        self.labels = self.ids[:, 0] % 3

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i], "labels": self.labels[i]}


@pytest.fixture(scope="module")
def classifier():
    config = transformers.BertConfig(
        vocab_size=30,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=3,
    )
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    train = DataLoader(Sentences(96, 0), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(15):  # a short MAP training
        for batch in train:
            opt.zero_grad()
            model(**batch).loss.backward()
            opt.step()
    return model.eval()


def test_ella_fits_and_predicts_a_bert_classifier_on_dict_batches(classifier):
    before = {n: p.detach().clone() for n, p in classifier.named_parameters()}
    train, val = DataLoader(Sentences(96, 0), batch_size=32), DataLoader(Sentences(48, 1), batch_size=16)
    kernel = EmpiricalNTK(classifier, "fd", num_samples=64, progress=False)
    post = ELLA(
        classifier, kernel=kernel, solver=NeuralEF(4, steps=60, batch_size=32, progress=False), progress=False
    ).fit(train, val)
    # the default eigenfunction network is a head on the pooled features the classification layer reads
    body = post.solver_.net_.body
    assert type(body).__name__ == "FeatureHead" and body.model is classifier and body.layer == "classifier"
    assert body.head[1].in_features == classifier.config.hidden_size and body.head[-1].out_features == 3 * 4
    batch = next(iter(val))
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    probs = post.predict(inputs)
    with torch.no_grad():
        logits = classifier(**inputs).logits
    assert probs.shape == (16, 3) and torch.allclose(probs.sum(-1), torch.ones(16), atol=1e-5)
    assert torch.equal(probs.argmax(-1), logits.argmax(-1))  # the margin link keeps the MAP class
    assert evaluate(post, val)["n"] == 48
    assert all(torch.equal(p, before[n]) for n, p in classifier.named_parameters())

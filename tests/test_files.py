"""ella.files: checksummed tensor files that never unpickle code, and the model fingerprint."""

import pickle

import pytest
import torch
from torch import nn

from ella import files


def test_round_trip_of_tensors_and_metadata(tmp_path):
    tensors = {"a": torch.arange(6.0).reshape(2, 3), "net": {"w": torch.ones(2), "b": [torch.zeros(1), torch.eye(2)]}}
    files.write(tmp_path / "f.pt", "kind-x", 3, {"n": 1, "names": ["a", "b"]}, tensors)
    version, meta, back = files.read(tmp_path / "f.pt", "kind-x", 3)
    assert version == 3 and meta == {"n": 1, "names": ["a", "b"]}
    assert [p for p, _ in files.leaves(back)] == [p for p, _ in files.leaves(tensors)]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(files.leaves(back), files.leaves(tensors)))


def test_a_pickled_object_is_refused_without_running_it(tmp_path):
    ran = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (ran.touch, ())

    torch.save({"format": "kind-x", "version": 1, "meta": "{}", "tensors": {}, "x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="refuses to unpickle"):
        files.read(tmp_path / "evil.pt", "kind-x", 1)
    assert not ran.exists()
    with open(tmp_path / "plain.pkl", "wb") as f:  # not even a torch file
        pickle.dump(Payload(), f)
    with pytest.raises(ValueError, match="plain.pkl"):
        files.read(tmp_path / "plain.pkl", "kind-x", 1)
    assert not ran.exists()


@pytest.mark.parametrize("change, message", [
    (lambda s: {**s, "version": 0}, "version 0; this ella reads versions 1 to 2"),
    (lambda s: {**s, "version": 3}, "version 3"),
    (lambda s: {**s, "version": True}, "version True"),
    (lambda s: {**s, "format": "other"}, "not an kind-x file"),
    (lambda s: {k: v for k, v in s.items() if k != "checksum"}, "malformed"),
    (lambda s: {**s, "meta": "{not json"}, "malformed"),
    (lambda s: {**s, "meta": "[1, 2]", "checksum": files.checksum("[1, 2]", s["tensors"])}, "not a JSON object"),
    (lambda s: {**s, "tensors": {"a": torch.ones(2) * 2}}, "checksum does not match"),
    (lambda s: {**s, "tensors": {"a": 3}}, "malformed"),
    (lambda s: [s], "not an kind-x file"),
])
def test_every_malformed_file_is_one_clear_error(tmp_path, change, message):
    files.write(tmp_path / "f.pt", "kind-x", 2, {"n": 1}, {"a": torch.ones(2)})
    torch.save(change(torch.load(tmp_path / "f.pt", weights_only=True)), tmp_path / "g.pt")
    with pytest.raises(ValueError, match=message):
        files.read(tmp_path / "g.pt", "kind-x", 2)
    with pytest.raises(ValueError, match="no such file"):
        files.read(tmp_path / "missing.pt", "kind-x", 2)


def test_the_fingerprint_covers_parameters_and_buffers():
    net = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)).eval()
    before = files.fingerprint(net)
    net[1].running_var.mul_(1.5)
    assert files.fingerprint(net) != before
    net[1].running_var.div_(1.5)
    assert files.fingerprint(net) == before
    with torch.no_grad():
        net[0].bias[0] += 1e-7
    assert files.fingerprint(net) != before

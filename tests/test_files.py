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


@pytest.mark.parametrize(
    "change, message",
    [
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
    ],
)
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


# ---------------------------------------------------------------- atomic saves
_CHILD = """
import os, sys, time, resource, signal, torch
from ella import files
path, how = sys.argv[1], sys.argv[2]
big = {"w": torch.ones(2_000_000)}  # 8 MB
if how == "kill":  # stop inside the save, after the bytes are written and before the rename
    def stall(fd):
        print("writing", flush=True)
        time.sleep(60)
    os.fsync = stall
else:  # a file system that holds 1 MB more: writes past it fail with EFBIG
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20))
try:
    files.write(path, "kind-x", 1, {"new": True}, big)
except OSError as e:
    print("error:", e, flush=True)
"""


def _old_file(tmp_path):
    path = tmp_path / "post.pt"
    files.write(path, "kind-x", 1, {"new": False}, {"w": torch.arange(5.0)})
    return path


def _still_old(path):
    _, meta, tensors = files.read(path, "kind-x", 1)
    assert meta == {"new": False} and torch.equal(tensors["w"], torch.arange(5.0))


def test_a_save_killed_mid_write_leaves_the_old_file(tmp_path):
    import signal
    import subprocess
    import sys

    path = _old_file(tmp_path)
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path), "kill"], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(30)
    assert child.returncode == -signal.SIGKILL
    _still_old(path)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "post.pt"]
    assert len(leftovers) == 1 and leftovers[0].endswith(".partial")  # (a killed process cannot clean up)


def test_a_save_on_a_full_file_system_leaves_the_old_file_and_says_why(tmp_path):
    import subprocess
    import sys

    path = _old_file(tmp_path)
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path), "full"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"error: cannot save to {path} (the earlier file, if any, is unchanged)" in out.stdout
    assert "the file system took only part of it" in out.stdout or "File too large" in out.stdout
    _still_old(path)
    assert [p.name for p in tmp_path.iterdir()] == ["post.pt"]  # the partial file removed


def test_a_symlinked_save_path_is_replaced_not_followed(tmp_path):
    target = tmp_path / "target.txt"
    target.write_text("keep me")
    link = tmp_path / "post.pt"
    link.symlink_to(target)
    files.write(link, "kind-x", 1, {"n": 1}, {"a": torch.ones(2)})
    assert target.read_text() == "keep me" and not link.is_symlink()
    assert files.read(link, "kind-x", 1)[1] == {"n": 1}


def test_a_save_into_a_missing_folder_names_it(tmp_path):
    with pytest.raises(OSError, match="the folder .*missing does not exist"):
        files.write(tmp_path / "missing" / "f.pt", "kind-x", 1, {}, {"a": torch.ones(1)})


def test_the_checksum_comes_before_parsing_and_nesting_is_bounded(tmp_path):
    deep = "[" * 10_000 + "]" * 10_000
    files.write(tmp_path / "f.pt", "kind-x", 1, {"n": 1}, {"a": torch.ones(2)})
    state = torch.load(tmp_path / "f.pt", weights_only=True)
    torch.save({**state, "meta": deep}, tmp_path / "bad-sum.pt")  # deep metadata, wrong checksum
    with pytest.raises(ValueError, match="checksum does not match"):
        files.read(tmp_path / "bad-sum.pt", "kind-x", 1)
    torch.save({**state, "meta": deep, "checksum": files.checksum(deep, state["tensors"])}, tmp_path / "deep.pt")
    with pytest.raises(ValueError, match="nests deeper than 16"):
        files.read(tmp_path / "deep.pt", "kind-x", 1)
    nested = torch.ones(1)
    for _ in range(40):
        nested = [nested]
    torch.save({**state, "tensors": {"a": nested}}, tmp_path / "nested.pt")
    with pytest.raises(ValueError, match="nests deeper than 16"):
        files.read(tmp_path / "nested.pt", "kind-x", 1)
    big = '{"x": "' + "a" * files.MAX_META + '"}'
    torch.save({**state, "meta": big}, tmp_path / "big.pt")
    with pytest.raises(ValueError, match="characters of metadata"):
        files.read(tmp_path / "big.pt", "kind-x", 1)


def test_a_compressed_archive_is_refused_before_it_is_expanded(tmp_path):
    """A tensor of zeros deflates to almost nothing: a small file that would expand into a large one."""
    import zipfile

    files.write(tmp_path / "f.pt", "kind-x", 1, {}, {"a": torch.zeros(2**20)})
    with (
        zipfile.ZipFile(tmp_path / "f.pt") as src,
        zipfile.ZipFile(tmp_path / "bomb.pt", "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    assert (tmp_path / "bomb.pt").stat().st_size < (tmp_path / "f.pt").stat().st_size / 100
    with pytest.raises(ValueError, match="bomb.pt is malformed: it holds compressed entries"):
        files.read(tmp_path / "bomb.pt", "kind-x", 1)
    (tmp_path / "noise.pt").write_bytes(bytes(range(256)) * 16)
    with pytest.raises(ValueError, match="noise.pt is not a readable ella file: not a file `torch.save` wrote"):
        files.read(tmp_path / "noise.pt", "kind-x", 1)


def test_a_saved_file_has_the_permissions_of_any_new_file_or_of_the_one_it_replaces(tmp_path):
    import os
    import stat

    mask = os.umask(0o022)
    try:
        files.write(tmp_path / "new.pt", "kind-x", 1, {}, {"a": torch.ones(1)})
        assert stat.S_IMODE((tmp_path / "new.pt").stat().st_mode) == 0o644
        (tmp_path / "new.pt").chmod(0o600)
        files.write(tmp_path / "new.pt", "kind-x", 1, {}, {"a": torch.zeros(1)})
        assert stat.S_IMODE((tmp_path / "new.pt").stat().st_mode) == 0o600
    finally:
        os.umask(mask)

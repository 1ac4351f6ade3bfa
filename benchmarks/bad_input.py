"""Bad input -> what ella says: every case is tried, and the script fails if one is silent or fails late.

    python benchmarks/bad_input.py               # prints the table, writes benchmarks/results/bad_input.md,
                                                 # and puts the table into README.md between its markers

Each case builds a tiny problem and does what a user might: a malicious or damaged posterior file, non-finite
data, mismatched labels, wrong batch structure, out-of-range arguments, a model left in training mode, a
BatchNorm network given to KFAC-LLA, a prior search that ends on its grid's edge, a bad command line. A case
passes when ella raises a clear ``ValueError``/``TypeError`` (or a usage error) *before any long work started*,
or, where the input is legitimate but needs attention, warns. A case sets up what it needs (a fitted posterior,
a saved file) and returns the one bad call; "long work" is any NTK feature, Jacobian or Gram computation or
curvature pass made by that call, and the script watches for them. A case that raises anything else, raises after
the long work began, or says nothing, fails the script (exit status 1).
"""

from __future__ import annotations

import argparse
import io
import struct
import sys
import tempfile
import warnings
import zipfile
from contextlib import redirect_stderr
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ella import ELLA
from ella.eigen import Nystrom
from ella.kernels import EmpiricalNTK
from ella.methods import KFACLLA, MAP, Predictive, Tuning
from ella.methods.linearised import LinearisedLaplace
from ella.trajectory import Trajectory

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- bad-input-table:start -->", "<!-- bad-input-table:end -->"
CASES = []


def case(description: str, needs: str | None = None):
    """Register a case; ``needs`` names the optional module (such as laplace-torch's ``laplace``) it uses."""

    def add(fn):
        fn.needs = needs
        CASES.append((description, fn))
        return fn

    return add


# ------------------------------------------------------------------------------------------- watching for long work
class Watch:
    """Counts calls of the long stages: NTK features, Jacobian rows and Gram blocks, and the curvature pass."""

    started = 0

    def __enter__(self):
        self.saved = [
            (EmpiricalNTK, "features"),
            (EmpiricalNTK, "jacobian_rows"),
            (EmpiricalNTK, "gram"),
            (LinearisedLaplace, "_accumulate"),
        ]
        self.originals = [(owner, name, owner.__dict__[name]) for owner, name in self.saved if name in owner.__dict__]
        for owner, name, fn in self.originals:
            setattr(owner, name, self._counted(fn))
        Watch.started = 0
        return self

    @staticmethod
    def _counted(fn):
        def wrapper(*args, **kwargs):
            Watch.started += 1
            return fn(*args, **kwargs)

        return wrapper

    def __exit__(self, *exc):
        for owner, name, fn in self.originals:
            setattr(owner, name, fn)


# ------------------------------------------------------------------------------------------- tiny problems
def net(seed: int = 0, out: int = 3) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, out)).eval()


def data(n: int = 40, out: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return x, torch.randint(0, out, (n,), generator=g)


def loader(x, y, batch_size: int = 16):
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def fitted(tmp: Path) -> tuple[nn.Module, ELLA, Path]:
    model = net()
    post = ELLA(model, k=4, solver="nystrom", progress=False, tuning=Tuning(prior_precision=1.0)).fit(loader(*data()))
    path = tmp / "post.pt"
    post.save(path)
    return model, post, path


def quiet_ella(model, **kwargs) -> ELLA:
    return ELLA(model, k=4, solver="nystrom", progress=False, **kwargs)


# ------------------------------------------------------------------------------------------- the cases
@case("a posterior file that runs code when unpickled")
def _(tmp):
    model, _, _ = fitted(tmp)

    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp / "pwned",))

    torch.save({"format": "ella-posterior", "version": 4, "payload": Payload()}, tmp / "evil.pt")

    def load():
        try:
            ELLA.load(tmp / "evil.pt", model)
        finally:
            assert not (tmp / "pwned").exists(), "the payload ran"

    return load


@case("a trajectory file that runs code when unpickled")
def _(tmp):
    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp / "pwned",))

    torch.save({"format": "ella-trajectory", "payload": Payload()}, tmp / "evil.pt")

    def load():
        try:
            Trajectory.load(tmp / "evil.pt", net())
        finally:
            assert not (tmp / "pwned").exists(), "the payload ran"

    return load


@case("a posterior file with one byte of a tensor flipped")
def _(tmp):
    model, _, path = fitted(tmp)
    with zipfile.ZipFile(path) as archive:  # the first byte of the largest tensor's stored data
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    raw[info.header_offset + 30 + name_length + extra_length] ^= 0x01
    path.write_bytes(bytes(raw))
    return lambda: ELLA.load(path, model)


@case("a truncated posterior file")
def _(tmp):
    model, _, path = fitted(tmp)
    path.write_bytes(path.read_bytes()[:300])
    return lambda: ELLA.load(path, model)


@case("a posterior file of format version 0")
def _(tmp):
    model, _, path = fitted(tmp)
    state = torch.load(path, weights_only=True)
    torch.save({**state, "version": 0}, path)
    return lambda: ELLA.load(path, model)


@case("a posterior file of format version -5")
def _(tmp):
    model, _, path = fitted(tmp)
    state = torch.load(path, weights_only=True)
    torch.save({**state, "version": -5}, path)
    return lambda: ELLA.load(path, model)


@case("a posterior file with its metadata removed")
def _(tmp):
    model, _, path = fitted(tmp)
    state = torch.load(path, weights_only=True)
    del state["meta"]
    torch.save(state, path)
    return lambda: ELLA.load(path, model)


@case("loading onto a network whose batch-norm statistics changed")
def _(tmp):
    bn = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3)).eval()
    quiet_ella(bn, tuning=Tuning(prior_precision=1.0)).fit(loader(*data())).save(tmp / "bn.pt")
    bn[1].running_mean += 0.1  # the weights are the same, the statistics are not
    return lambda: ELLA.load(tmp / "bn.pt", bn)


@case("nan in the training inputs")
def _(tmp):
    x, y = data()
    x[7, 2] = float("nan")
    return lambda: quiet_ella(net()).fit(loader(x, y))


@case("inf in the validation inputs")
def _(tmp):
    x, y = data()
    xv, yv = data(20, seed=1)
    xv[3, 0] = float("inf")
    return lambda: quiet_ella(net()).fit(loader(x, y), loader(xv, yv))


@case("nan in regression targets")
def _(tmp):
    x, _ = data()
    y = torch.randn(40, 1)
    y[5] = float("nan")
    return lambda: quiet_ella(net(out=1), likelihood="regression").fit(loader(x, y))


@case("labels outside [0, C)")
def _(tmp):
    x, y = data()
    return lambda: quiet_ella(net()).fit(loader(x, y + 3))


@case("fewer labels than inputs in a batch")
def _(tmp):
    x, y = data()
    return lambda: quiet_ella(net()).fit([(x[:16], y[:15])])


@case("(x, y, w) batches with sample weights")
def _(tmp):
    x, y = data()
    return lambda: quiet_ella(net()).fit(DataLoader(TensorDataset(x, y, torch.ones(40)), batch_size=16))


@case("a training loader with no data")
def _(tmp):
    x, y = data()
    return lambda: quiet_ella(net()).fit(loader(x[:0], y[:0]))


@case("predicting an empty batch")
def _(tmp):
    _, post, _ = fitted(tmp)
    return lambda: post.predict(torch.zeros(0, 4))


@case("predicting one unbatched input")
def _(tmp):
    _, post, _ = fitted(tmp)
    return lambda: post.predict(torch.randn(4))


@case("predicting inputs of another width")
def _(tmp):
    _, post, _ = fitted(tmp)
    return lambda: post.predict(torch.randn(5, 6))


@case("predicting after model.train() (batch norm)")
def _(tmp):
    bn = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3)).eval()
    post = quiet_ella(bn, tuning=Tuning(prior_precision=1.0)).fit(loader(*data()))
    bn.train()
    return lambda: post.predict(torch.randn(5, 4))


@case("predicting with dropout applied through torch.nn.functional in training mode")
def _(tmp):
    class FunctionalDropout(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.active = nn.Linear(4, 8), nn.Linear(8, 3), False

        def forward(self, x):
            return self.b(nn.functional.dropout(torch.tanh(self.a(x)), 0.5, training=self.active))

    model = FunctionalDropout().eval()
    post = quiet_ella(model, tuning=Tuning(prior_precision=1.0)).fit(loader(*data()))
    model.active = True  # the eval flag says nothing about it
    return lambda: post.predict(torch.randn(5, 4))


@case("prior_precision=inf")
def _(tmp):
    return lambda: quiet_ella(net(), tuning=Tuning(prior_precision=float("inf")))


@case("an empty prior_grid")
def _(tmp):
    return lambda: quiet_ella(net(), tuning=Tuning(prior_grid=[]))


@case("a prior_grid with a non-positive value")
def _(tmp):
    return lambda: quiet_ella(net(), tuning=Tuning(prior_grid=[1.0, 0.0, 10.0]))


@case("n_samples=0")
def _(tmp):
    return lambda: quiet_ella(net(), predictive=Predictive(link="mc", n_samples=0))


@case("sigma_noise=0")
def _(tmp):
    return lambda: quiet_ella(net(out=1), likelihood="regression", tuning=Tuning(sigma_noise=0.0))


@case("a boolean for an integer (k=True)")
def _(tmp):
    return lambda: ELLA(net(), k=True)


@case("an empty link name")
def _(tmp):
    return lambda: quiet_ella(net(), predictive=Predictive(link=""))


@case("a typo in a kernel option")
def _(tmp):
    return lambda: EmpiricalNTK(net(), estimtor="fd")


@case("a typo in a solver option")
def _(tmp):
    return lambda: Nystrom(4, num_point=100)


@case("k larger than the kernel points allow")
def _(tmp):
    return lambda: ELLA(net(), k=200, solver="exact", progress=False).fit(loader(*data()))


@case("KFAC-LLA on a CNN with batch norm (left out of the curvature, named)", needs="laplace")
def _(tmp):
    cnn = nn.Sequential(
        nn.Unflatten(1, (1, 1, 4)), nn.Conv2d(1, 4, (1, 3)), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3)
    ).eval()
    return lambda: KFACLLA(cnn, progress=False).fit(loader(*data()))


@case("a prior search that ends on its grid's edge")
def _(tmp):
    x, y = data()
    return lambda: quiet_ella(net(), tuning=Tuning(prior_grid=[1e3, 1e4])).fit(loader(x, y), loader(x, (y + 1) % 3))


@case("regression without validation data")
def _(tmp):
    x, _ = data()
    return lambda: quiet_ella(net(out=1), likelihood="regression").fit(loader(x, torch.randn(40, 1)))


@case("a MAP regression predicting before fit (its noise is unknown)")
def _(tmp):
    return lambda: MAP(net(out=1), "regression").predict(torch.randn(3, 4))


@case("`ella demo --out` naming an existing report")
def _(tmp):
    from ella_lab.cli import main

    (tmp / "report.json").write_text("{}")
    return lambda: main(["demo", "--out", str(tmp)])


@case("`ella compare --threads 0`")
def _(tmp):
    from ella_lab.cli import main

    return lambda: main(["compare", "--dataset", "mnist1d", "--threads", "0"])


# ------------------------------------------------------------------------------------------- trust, second round
@case("a save that fails half way (a full file system) over an earlier posterior")
def _(tmp):
    import resource
    import signal

    model, post, path = fitted(tmp)
    big = quiet_ella(net(), tuning=Tuning(prior_precision=1.0)).fit(loader(*data()))

    def save():
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, hard))  # writes past 2 KB fail, as on a full disk
        try:
            big.save(path)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, handler)
            ELLA.load(path, model)  # the earlier posterior is whole

    return save


@case("saving onto a symbolic link (replaced; its target untouched)")
def _(tmp):
    _, post, _ = fitted(tmp)
    target = tmp / "target.txt"
    target.write_text("keep")
    (tmp / "link.pt").symlink_to(target)

    def save():
        post.save(tmp / "link.pt")
        assert target.read_text() == "keep" and not (tmp / "link.pt").is_symlink()
        return "handled: the link is replaced by the new file, its target is left as it was"

    return save


@case("a generator as `train_loader` (read once, empty the second time)")
def _(tmp):
    x, y = data()
    return lambda: quiet_ella(net()).fit((b for b in loader(x, y)))


@case("a generator as `val_loader`")
def _(tmp):
    x, y = data()
    return lambda: quiet_ella(net()).fit(loader(x, y), iter(loader(x, y)))


@case("a DataLoader over an IterableDataset without a length")
def _(tmp):
    from torch.utils.data import IterableDataset

    x, y = data()

    class Stream(IterableDataset):
        def __iter__(self):
            return iter(zip(x, y))

    def fit():
        post = quiet_ella(net(), tuning=Tuning(prior_precision=1.0)).fit(DataLoader(Stream(), batch_size=16))
        return f"handled: fitted ({post.num_train_} points)"

    return fit


@case("a shuffling `train_loader` (the same posterior for the same seed)")
def _(tmp):
    x, y = data()
    shuffled = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)

    def fit():
        one, two = (
            quiet_ella(net(), tuning=Tuning(prior_precision=1.0, fold_in=20)).fit(shuffled).predict(x) for _ in range(2)
        )
        assert torch.equal(one, two)
        return "handled: two fits give the same predictions (the loader's orders are seeded by `seed`)"

    return fit


@case("20 threads predicting at once")
def _(tmp):
    import threading

    _, post, _ = fitted(tmp)
    inputs = [torch.randn(30, 4, generator=torch.Generator().manual_seed(i)) for i in range(20)]

    def predict():
        expected, got = [post.predict(x) for x in inputs], [None] * 20
        threads = [threading.Thread(target=lambda i=i: got.__setitem__(i, post.predict(inputs[i]))) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(g is not None and torch.equal(g, e) for g, e in zip(got, expected))
        return "handled: every prediction equals the sequential one"

    return predict


@case("another thread running the model during a finite-difference fit")
def _(tmp):
    import threading

    model, (x, y) = net(), data()
    probe = torch.randn(8, 4)
    with torch.no_grad():
        expected = model(probe)

    def fit():
        done, wrong = threading.Event(), []

        def watch():
            while not done.is_set():
                with torch.no_grad():
                    wrong.append(not torch.equal(model(probe), expected))

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            kernel = EmpiricalNTK(model, estimator="fd", num_samples=64, progress=False)
            ELLA(model, k=4, kernel=kernel, solver="neuralef", progress=False, tuning=Tuning(prior_precision=1.0)).fit(
                loader(x, y)
            )
        finally:
            done.set()
            watcher.join()
        assert not any(wrong)
        return "handled: no forward pass of the other thread saw perturbed weights"

    return fit


@case("laplace-torch's README toy (a 1-50-1 tanh MLP) with `ELLA(model, 'regression')`: fewer eigenpairs than k")
def _(tmp):
    torch.manual_seed(0)
    x = torch.rand(150, 1) * 8 - 4
    y = torch.sin(x) + 0.3 * torch.randn_like(x)
    model = nn.Sequential(nn.Linear(1, 50), nn.Tanh(), nn.Linear(50, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    return lambda: ELLA(model.eval(), "regression", progress=False).fit(loader(x, y), loader(x[:50] + 0.01, y[:50]))


@case("the training loader passed as `val_loader`")
def _(tmp):
    x, y = data()
    train = loader(x, y)
    return lambda: quiet_ella(net()).fit(train, train)


@case("a layer updated after fit")
def _(tmp):
    model, post, _ = fitted(tmp)
    with torch.no_grad():
        model[0].weight.mul_(1.01)
    return lambda: post.predict(torch.randn(3, 4))


@case("a layer frozen after fit")
def _(tmp):
    model, post, _ = fitted(tmp)
    model[0].weight.requires_grad_(False)
    return lambda: post.predict(torch.randn(3, 4))


@case("loading onto the same weights with another activation")
def _(tmp):
    model, _, path = fitted(tmp)
    model[1] = nn.ReLU()
    return lambda: ELLA.load(path, model)


class _Mapped(nn.Module):
    """A 4-3 linear layer whose outputs ``out`` are returned as ``fn(x, out)``: the misbehaving models below."""

    def __init__(self, fn):
        super().__init__()
        self.layer, self.fn = nn.Linear(4, 3), fn

    def forward(self, x):
        return self.fn(x, self.layer(x))


def _nan_above(x, out):  # NaN outputs for inputs whose first feature exceeds 2
    return torch.where(x[:, :1] > 2, torch.nan, out)


@case("a model whose output is NaN on some inputs, at predict")
def _(tmp):
    x, y = data()
    post = quiet_ella(_Mapped(_nan_above).eval(), tuning=Tuning(prior_precision=1.0)).fit(loader(x.clamp(max=1), y))
    xt = torch.randn(5, 4).clamp(max=1)
    xt[2, 0] = 5.0
    return lambda: post.predict(xt)


@case("a model whose output is NaN on one training input")
def _(tmp):
    x, y = data()
    x = x.clamp(max=1)
    x[30, 0] = 5.0
    return lambda: quiet_ella(_Mapped(_nan_above).eval()).fit(loader(x, y))


@case("outputs near 1e-6 with dropout left active (through torch.nn.functional)")
def _(tmp):
    tiny = _Mapped(lambda x, out: 1e-6 * nn.functional.dropout(out, 0.5, training=True)).eval()
    return lambda: quiet_ella(tiny).fit(loader(*data()))


@case("a posterior file with deeply nested metadata (checksum recomputed)")
def _(tmp):
    from ella import files

    model, _, path = fitted(tmp)
    state = torch.load(path, weights_only=True)
    deep = "[" * 100_000 + "]" * 100_000
    torch.save({**state, "meta": deep, "checksum": files.checksum(deep, state["tensors"])}, path)
    return lambda: ELLA.load(path, model)


def _edit(path, change) -> None:
    """The file with its metadata edited and its checksum recomputed (the checksum catches accidents only)."""
    import json

    from ella import files

    state = torch.load(path, weights_only=True)
    meta = json.loads(state["meta"])
    change(meta)
    text = json.dumps(meta)
    torch.save({**state, "meta": text, "checksum": files.checksum(text, state["tensors"])}, path)


@case("an edited posterior file (checksum recomputed) with a NaN prior precision")
def _(tmp):
    model, _, path = fitted(tmp)
    _edit(path, lambda m: m["fitted"].update(prior_precision=float("nan")))
    return lambda: ELLA.load(path, model)


@case("an edited posterior file (checksum recomputed) declaring 10^10-entry inputs")
def _(tmp):
    model, _, path = fitted(tmp)
    _edit(path, lambda m: m["fitted"].update(input_spec={"shape": [100000, 100000], "dtype": "float32"}))
    return lambda: ELLA.load(path, model)


@case("random bytes as a posterior file")
def _(tmp):
    import os

    (tmp / "noise.pt").write_bytes(os.urandom(4096))
    return lambda: ELLA.load(tmp / "noise.pt", net())


@case("a wrong-length `sigma_noise` (refused before the eigenfunctions are learned)")
def _(tmp):
    x, _ = data()
    return lambda: ELLA(net(out=2), "regression", k=4, progress=False, tuning=Tuning(sigma_noise=[0.1, 0.2, 0.3])).fit(
        loader(x, torch.randn(40, 2))
    )


@case("a model wrapped in nn.DataParallel")
def _(tmp):
    return lambda: quiet_ella(nn.DataParallel(net()))


@case("a model compiled by torch.compile")
def _(tmp):
    return lambda: quiet_ella(torch.compile(net()))


@case("a model returning a dict without `logits`")
def _(tmp):
    return lambda: quiet_ella(_Mapped(lambda x, out: {"scores": out}).eval()).fit(loader(*data()))


@case("a one-logit binary classifier")
def _(tmp):
    x, y = data(out=2)
    return lambda: quiet_ella(net(out=1)).fit(loader(x, y))


@case("inputs on the meta device")
def _(tmp):
    _, post, _ = fitted(tmp)
    return lambda: post.predict(torch.empty(3, 4, device="meta"))


@case("code written for the removed `features=` argument")
def _(tmp):
    return lambda: ELLA(net(), features="jvp")


@case("code written for the flat `prior_precision=` of earlier versions (now a field of `Tuning`)")
def _(tmp):
    return lambda: ELLA(net(), prior_precision=1.0)


@case("code written for `posterior_update=False` of earlier versions")
def _(tmp):
    return lambda: ELLA(net(), posterior_update=False)


@case("a dict as `tuning`")
def _(tmp):
    return lambda: ELLA(net(), tuning={"prior_precision": 1.0})


@case("`ella compare` when no data set is found")
def _(tmp):
    from ella_lab.cli import main

    return lambda: main(
        ["compare", "--dataset", "mnist", "--data-root", str(tmp), "--out", str(tmp / "out"), "--no-progress"]
    )


@case("`ella demo --out ''`")
def _(tmp):
    from ella_lab.cli import main

    return lambda: main(["demo", "--out", ""])


@case("`ella eigen --k` above `--num-points`")
def _(tmp):
    from ella_lab.cli import main

    return lambda: main(["eigen", "--solver", "nystrom", "--k", "9", "--num-points", "5", "--out", str(tmp)])


# ------------------------------------------------------------------------------------------- running them
def run_case(fn) -> tuple[str, str, bool]:
    """``(kind, message, ok)``: kind is "error", "usage error", "warning", "handled" (a legitimate input dealt with
    as it should be, checked by the case), "silent" or "crash"."""
    with tempfile.TemporaryDirectory() as tmp:
        kind, message, ok = _run(fn, Path(tmp))
        return kind, message.replace(f"{tmp}/", "").replace(tmp, "<folder>"), ok


def _run(fn, tmp: Path) -> tuple[str, str, bool]:
    with Watch(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore")
        action = fn(tmp)  # the setup: long work is allowed here
        warnings.simplefilter("always")
        Watch.started = 0
        stderr = io.StringIO()
        try:
            with redirect_stderr(stderr):
                outcome = action()
            if isinstance(outcome, str) and outcome.startswith("handled: "):  # legitimate input, handled right
                return "handled", outcome.removeprefix("handled: "), True
            if isinstance(outcome, int) and not isinstance(outcome, bool) and outcome:  # a command's exit status
                said = stderr.getvalue().strip().splitlines()
                return f"exit status {outcome}", said[-1] if said else "", True
        except (ValueError, TypeError, RuntimeError, OSError) as e:
            late = Watch.started > 0
            kind = "error after the long work" if late else "error"
            return kind, f"{type(e).__name__}: {e}", not late and not isinstance(e, AssertionError)
        except SystemExit as e:
            message = stderr.getvalue().strip().splitlines()[-1] if stderr.getvalue().strip() else str(e)
            return "usage error", message, e.code == 2
        except Exception as e:  # noqa: BLE001 - anything else is a crash
            return "crash", f"{type(e).__name__}: {e}", False
        ours = [w for w in caught if w.category is UserWarning]
        if ours:
            return "warning", str(ours[0].message), True
        return "silent", "", False


def table(rows) -> str:
    lines = ["| bad input | what ella says |", "|---|---|"]
    for description, kind, message, _ in rows:
        short = message.replace("|", "\\|").replace("\n", " ")
        short = short if len(short) <= 180 else short[:177] + "..."
        lines.append(f"| {description} | {kind}: {short} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--no-readme", action="store_true", help="leave README.md alone")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for description, fn in CASES:
        kind, message, ok = run_case(fn)
        rows.append((description, kind, message, ok))
        print(f"[{'ok' if ok else 'FAIL'}] {description}: {kind}: {message}")
    text = (
        "Generated by `python benchmarks/bad_input.py`: every case is tried on a tiny problem; an error is "
        "raised before any kernel, eigen-solver or curvature work starts.\n\n" + table(rows)
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bad_input.md").write_text(text)
    if not args.no_readme:
        readme = ROOT / "README.md"
        body = readme.read_text()
        if START in body and END in body:
            head, rest = body.split(START, 1)
            readme.write_text(f"{head}{START}\n{text}{END}{rest.split(END, 1)[1]}")
    failed = [r[0] for r in rows if not r[3]]
    if failed:
        print(f"{len(failed)} case(s) silent or late: {failed}", file=sys.stderr)
        return 1
    print(f"all {len(rows)} cases answered clearly and early")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The settings values of the linearised methods: checked when made, plain values that survive JSON, and pointers
from the arguments of earlier versions."""

import dataclasses
import json

import pytest

from ella.methods import ELLA, ExactLLA, Predictive, Tuning
from ella.methods.settings import MOVED

from tests.conftest import tiny_mlp


def test_tuning_checks_and_normalises_its_fields():
    tuning = Tuning(prior_precision=2, sigma_noise=[0.3, 0.1], prior_grid=[10, 0.1, 1], fold_in=0, residual=8)
    assert tuning.prior_precision == 2.0 and tuning.sigma_noise == (0.3, 0.1) and tuning.prior_grid == (0.1, 1.0, 10.0)
    assert Tuning(sigma_noise=[0.5]).sigma_noise == 0.5  # one value for every output
    assert Tuning(**json.loads(json.dumps(tuning.as_dict()))) == tuning  # what a saved posterior records
    with pytest.raises(dataclasses.FrozenInstanceError):
        tuning.prior_precision = 1.0  # type: ignore[misc]
    for field, value, message in [
        ("prior_precision", -1.0, "`prior_precision` must be a positive finite number"),
        ("sigma_noise", 0.0, "`sigma_noise` must be a positive finite number"),
        ("sigma_noise", [], "`sigma_noise` must hold at least one value"),
        ("prior_grid", [], "`prior_grid` must be a non-empty list"),
        ("noise_grid", [1.0, float("nan")], "`noise_grid` must be a non-empty list of finite positive numbers"),
        ("fold_in", -3, "`fold_in` must be 'all', 'tune' or a number of training points"),
        ("fold_in", True, "`fold_in` must be"),
        ("residual", "trace", "`residual` must be one of"),
    ]:
        with pytest.raises(ValueError, match=message):
            Tuning(**{field: value})


def test_predictive_checks_its_fields():
    assert Predictive().as_dict() == {"link": "margin", "n_samples": 512, "batch_size": None}
    for field, value, message in [
        ("link", "softmax", "`link` must be one of"),
        ("n_samples", 0, "`n_samples` must be a positive integer"),
        ("batch_size", 2.5, "`batch_size` must be a positive integer"),
    ]:
        with pytest.raises(ValueError, match=message):
            Predictive(**{field: value})


def test_the_methods_read_their_settings_and_refuse_other_values():
    model = tiny_mlp()
    post = ExactLLA(model, tuning=Tuning(fold_in="tune"), predictive=Predictive(link="probit", batch_size=3))
    assert post.fold_in == "tune" and post.link == "probit" and post.batch_size == 3
    assert ExactLLA(model).fold_in == "all" and ExactLLA(model).batch_size == 256  # the method's defaults
    assert ELLA(model).fold_in == "tune" and ELLA(model).batch_size == 512
    with pytest.raises(TypeError, match=r"`tuning` must be an ella.Tuning \(or None\), got dict"):
        ELLA(model, tuning={"prior_precision": 1.0})
    with pytest.raises(TypeError, match="`predictive` must be an ella.Predictive"):
        ELLA(model, predictive=Tuning())
    with pytest.raises(ValueError, match="`tuning.residual` = 8: ExactLLA has no residual"):
        ExactLLA(model, tuning=Tuning(residual=8))
    with pytest.raises(ValueError, match="`sigma_noise` applies to regression only"):
        ELLA(model, tuning=Tuning(sigma_noise=0.1))


@pytest.mark.parametrize("name", sorted(MOVED))
def test_an_argument_of_earlier_versions_says_where_it_went(name):
    for cls in (ELLA, ExactLLA):
        with pytest.raises(TypeError, match=rf"{cls.__name__}\(\) got an unexpected keyword argument '{name}': "):
            cls(tiny_mlp(), **{name: None})

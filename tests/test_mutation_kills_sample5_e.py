"""Tests written for mutants that survived the fresh mutation sample (seed 5, 3%; MUTATION.md), group E.

Each test pins a documented behaviour and was checked by hand (tools/mutation_verify.py) to fail
with its mutant applied and to pass without; the mutant is named in the comment above it. Where a
mutant only changes a message, the `match` here is anchored on the exact label, so the test kills
it on its own (the golden file tests/error_messages.json pins the whole text besides).
"""
import pickle

import numpy as np
import pytest

from fastopt import layers
from fastopt.layers.activations import ACTIVATIONS
from fastopt.nn import FullyConnectedNet
from fastopt.optim._classes import CLASSES


# layers.activations._make_layer_functions__mutmut_33 (`else "XXXX"`): the layer functions made from
# the table document their formula; an activation without a hyperparameter (tanh, sigmoid) has no
# "(param >= low, default ...)" part, so its doc reads "out = <formula> elementwise. Returns ...".
# Import-time code: no test read these docstrings (relu's own, written out, has another form).
def test_table_made_activation_functions_document_their_formula():
    made = [s for s in ACTIVATIONS.values() if s.name != "relu"]
    assert any(s.param is None for s in made) and any(s.param is not None for s in made)
    for spec in made:
        doc = getattr(layers, spec.forward_kernel).__doc__
        hyper = f" ({spec.param} >= {spec.low:g}, default {spec.default:g})" if spec.param else ""
        assert doc.startswith(f"out = {spec.formula} elementwise{hyper}. Returns (out, cache);"), doc
        assert doc.endswith(f"recommended weight init: {spec.init!r}."), doc


# nn.fully_connected._check_keep__mutmut_37 (`low_open=None`) and _mutmut_45 (the label upper-cased):
# the alias `dropout` is a keep probability in (0, 1]. A plain 0 gets the CS231n hint before the
# check; a NumPy scalar zero (np.float32(0), np.int64(0): not int/float subclasses) reaches
# check_scalar, whose open lower bound refuses it. No test gave the alias a zero that reached it.
@pytest.mark.parametrize("zero", [np.float32(0), np.int64(0)])
def test_dropout_alias_refuses_a_numpy_zero_keep_ratio(zero):
    with pytest.raises(ValueError, match=r"^dropout \(alias of dropout_keep_ratio\) must be > 0, got 0"):
        FullyConnectedNet([4], input_dim=3, num_classes=2, dropout=zero)


# nn.fully_connected._Call.create_running_statistics__mutmut_6 (`rm is None and rv is None`): a
# batchnorm layer whose bn_params hold one running statistic but not the other gets the missing one
# created (CS231n's zeros) on a training call, exactly as when both are absent; the one given is
# kept. Every test gave both or neither; under the mutant the missing one was never created.
@pytest.mark.parametrize("given", ["running_mean", "running_var"])
def test_a_missing_running_statistic_is_created_when_the_other_is_given(given):
    X = np.random.default_rng(1).standard_normal((5, 3))
    y = np.array([0, 1, 1, 0, 1])

    def trained(preset):
        m = FullyConnectedNet([4], input_dim=3, num_classes=2, normalization="batchnorm", rng=0,
                              dtype=np.float64)
        m.bn_params[0].update(preset)
        m.loss(X, y)
        return m.bn_params[0]

    both_absent = trained({})
    own = np.zeros(4)
    one_given = trained({given: own})
    for key in ("running_mean", "running_var"):
        assert isinstance(one_given.get(key), np.ndarray), key
        np.testing.assert_array_equal(one_given[key], both_absent[key])
    assert one_given[given] is own


# optim._classes.make_class__mutmut_34 (`"__MODULE__"`): the optimizer classes say they live in
# fastopt.optim (where they are exported), not in the private fastopt.optim._classes that builds
# them (and does not hold them as attributes), so their repr names the public path and a class is
# pickled by reference (a config or a sweep holding the class itself). Only `__doc__`'s first line
# was tested of what make_class sets.
def test_optimizer_classes_live_in_fastopt_optim():
    import fastopt.optim

    for name, cls in CLASSES.items():
        assert cls.__module__ == "fastopt.optim", name
        assert getattr(fastopt.optim, cls.__qualname__) is cls
        assert repr(cls) == f"<class 'fastopt.optim.{name}'>"
        assert pickle.loads(pickle.dumps(cls)) is cls

"""Model files: bitwise the same predictions after a round trip; anything else in the file refused."""
import os

import numpy as np
import pytest

from fastopt import FullyConnectedNet, Solver, checkpoint
from fastopt.model_io import architecture_of, load_model, save_model
from fastopt.preprocessing import PCAWhiten, Standardize


def _trained(normalization="batchnorm", dtype=np.float32):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 12)).astype(dtype)
    y = rng.integers(0, 3, 80)
    pre = PCAWhiten(8).fit(X)
    Z = pre.transform(X)
    model = FullyConnectedNet([16, 8], input_dim=8, num_classes=3, normalization=normalization,
                              dropout_keep_ratio=0.8, reg=1e-3, weight_init="he", dtype=dtype, rng=1)
    Solver(model, {"X_train": Z, "y_train": y, "X_val": Z, "y_val": y}, update_rule="adam",
           batch_size=20, num_epochs=2, verbose=False, seed=0).train()
    return model, pre, X


@pytest.mark.parametrize("normalization", [None, "batchnorm", "layernorm"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_round_trip_gives_bitwise_the_same_predictions(tmp_path, normalization, dtype):
    model, pre, X = _trained(normalization, dtype)
    path = tmp_path / "m.model"
    save_model(path, model, preprocess=pre)
    saved = load_model(path)
    assert architecture_of(saved.model) == architecture_of(model)
    want = model.loss(pre.transform(X))
    assert saved.scores(X).tobytes() == want.tobytes()
    np.testing.assert_array_equal(saved.predict(X), np.argmax(want, axis=1))
    if normalization == "batchnorm":
        for a, b in zip(saved.model.bn_params, model.bn_params):
            assert a["running_mean"].tobytes() == b["running_mean"].tobytes()


def test_without_preprocessing(tmp_path):
    model = FullyConnectedNet([4], input_dim=3, num_classes=2, rng=0)
    save_model(tmp_path / "m", model)
    saved = load_model(tmp_path / "m")
    X = np.ones((2, 3), np.float32)
    assert saved.preprocess is None and saved.scores(X).tobytes() == model.loss(X).tobytes()


def _tamper(path, edit):
    data = checkpoint.load(path)
    edit(data)
    checkpoint.save(path, data)


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.update(format="torch"), "not a fastopt model file"),
    (lambda d: d.update(model="os.system"), "FullyConnectedNet only"),
    (lambda d: d.update(version=2), "version"),
    (lambda d: d.update(extra=1), "keys"),
    (lambda d: d["architecture"].update(hidden_dims=[16, 9]), "widths"),
    (lambda d: d["architecture"].update(hidden_dims=[10**9, 8]), "widths"),   # refused, not allocated
    (lambda d: d["architecture"].update(hidden_dims="16"), "as a list"),
    (lambda d: d["architecture"].update(num_classes=4), "widths"),
    (lambda d: d["architecture"].update(reg_type="l3"), "does not describe a valid"),
    (lambda d: d["architecture"].update(normalization="groupnorm!"), "does not describe a valid"),
    (lambda d: d["architecture"].update(dtype="object"), "dtype"),
    (lambda d: d["architecture"].pop("reg"), "architecture keys"),
    (lambda d: d["architecture"].update(module="os"), "architecture keys"),
    (lambda d: d["state"]["params"].update(W1=np.zeros((8, 15), np.float32)), "widths"),
    (lambda d: d["state"]["params"].update(b1=np.zeros(16, np.float64)), "does not describe a valid"),
    (lambda d: d["state"]["bn_params"][0].update(running_var=np.zeros(3, np.float32)), "does not describe a valid"),
    (lambda d: d["preprocess"].update(kind="zca"), "invalid preprocessing"),
    (lambda d: d["preprocess"].update(components=np.zeros((12, 5))), "invalid preprocessing"),
])
def test_another_architecture_or_tampered_values_are_refused(tmp_path, edit, match):
    model, pre, _ = _trained()
    path = str(tmp_path / "m.model")
    save_model(path, model, preprocess=pre)
    _tamper(path, edit)
    with pytest.raises(ValueError, match=match):
        load_model(path)


def test_preprocessing_must_fit_the_model(tmp_path):
    model, pre, X = _trained()
    path = str(tmp_path / "m.model")
    with pytest.raises(ValueError, match="input_dim"):
        save_model(path, model, preprocess=Standardize().fit(X))
    assert not os.path.exists(path)
    save_model(path, model, preprocess=pre)
    _tamper(path, lambda d: d.update(preprocess=Standardize().fit(X).state_dict()))
    with pytest.raises(ValueError, match="input_dim is 8"):
        load_model(path)
    with pytest.raises(TypeError):
        save_model(path, object())


def test_a_damaged_file_is_refused_and_load_touches_no_global_state(tmp_path):
    model, pre, _ = _trained()
    path = tmp_path / "m.model"
    save_model(path, model, preprocess=pre)
    np.random.seed(5)
    state = np.random.get_state()[1].copy()
    load_model(path)
    assert np.array_equal(np.random.get_state()[1], state)
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="corrupt"):
        load_model(path)


# ---------------------------------------------------------------- the model's own methods (branch transfer)

@pytest.mark.parametrize("activation, param", [("relu", None), ("tanh", None), ("leaky_relu", 0.05)])
def test_model_save_and_class_load_give_bitwise_the_same_predictions(tmp_path, activation, param):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((30, 6))
    model = FullyConnectedNet([9, 5], input_dim=6, num_classes=4, normalization="batchnorm",
                              activation=activation, activation_param=param, dtype=np.float64, rng=2)
    model.loss(X, rng.integers(0, 4, 30))          # running statistics away from their start
    model.save(tmp_path / "m.model", meta={"data": "digits", "classes": [0, 1, 2, 3]})
    loaded = FullyConnectedNet.load(tmp_path / "m.model")
    assert type(loaded) is FullyConnectedNet and loaded.activation == activation
    assert loaded.activation_param == model.activation_param
    assert loaded.loss(X).tobytes() == model.loss(X).tobytes()
    assert load_model(tmp_path / "m.model").meta == {"data": "digits", "classes": [0, 1, 2, 3]}


def test_a_file_without_activation_keys_is_a_relu_network(tmp_path):
    model = FullyConnectedNet([4], input_dim=3, num_classes=2, rng=0)
    path = str(tmp_path / "m")
    save_model(path, model)
    _tamper(path, lambda d: [d["architecture"].pop(k) for k in ("activation", "activation_param")])
    assert load_model(path).model.activation == "relu"


def test_load_weights_into_an_existing_model(tmp_path):
    src = FullyConnectedNet([8, 8], input_dim=5, num_classes=3, normalization="layernorm", reg=0.1, rng=1)
    src.save(tmp_path / "a")
    dst = FullyConnectedNet([8, 8], input_dim=5, num_classes=3, normalization="layernorm", rng=7)
    assert dst.load_weights(tmp_path / "a") is dst
    X = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    assert dst.loss(X).tobytes() == src.loss(X).tobytes()
    assert dst.reg == 0.0                          # training settings stay the model's own


@pytest.mark.parametrize("other, match", [
    (dict(hidden_dims=[8, 9]), "hidden_dims"),
    (dict(hidden_dims=[8]), "hidden_dims"),
    (dict(num_classes=4), "num_classes"),
    (dict(normalization="batchnorm"), "normalization"),
    (dict(activation="tanh"), "activation"),
    (dict(dtype=np.float64), "dtype"),
])
def test_load_weights_of_another_architecture_is_refused_and_changes_nothing(tmp_path, other, match):
    kw = dict(hidden_dims=[8, 8], input_dim=5, num_classes=3, normalization="layernorm", rng=1)
    FullyConnectedNet(**{**kw, **other}).save(tmp_path / "other")
    model = FullyConnectedNet(**kw)
    before = model.state_dict()
    with pytest.raises(ValueError, match=f"another architecture.*{match}"):
        model.load_weights(tmp_path / "other")
    after = model.state_dict()
    assert all(after["params"][k].tobytes() == v.tobytes() for k, v in before["params"].items())
    assert after["rng"] == before["rng"]


@pytest.mark.parametrize("meta", [{"x": object()}, {1: "a"}, {"x": [1, {}]}, ["data"]])
def test_meta_must_be_plain_data_and_a_refused_save_writes_nothing(tmp_path, meta):
    model = FullyConnectedNet([4], input_dim=3, num_classes=2, rng=0)
    with pytest.raises(TypeError, match="meta"):
        model.save(tmp_path / "m", meta=meta)
    assert not os.path.exists(tmp_path / "m")


def test_a_tampered_meta_is_refused(tmp_path):
    model = FullyConnectedNet([4], input_dim=3, num_classes=2, rng=0)
    path = str(tmp_path / "m")
    model.save(path, meta={"data": "digits"})
    _tamper(path, lambda d: d.update(meta={"data": np.zeros(3)}))
    with pytest.raises(ValueError, match="meta"):
        load_model(path)

"""The model and layer check cells of CS231n's assignment-2 notebooks, run on fastopt.

Each test is one notebook cell (FullyConnectedNets, BatchNormalization, Dropout,
ConvolutionalNetworks' spatial normalization), with the notebook's data, seeds and published
numbers; only the imports changed (cs231n.* -> fastopt.*). Where a cell prints relative errors, the
test asserts them at the level the notebook publishes ("around e-7 or less", ...); where it prints
values (initial losses, hard-coded scores), the test asserts the published values.
"""
import numpy as np
import pytest

from fastopt.gradcheck import eval_numerical_gradient, eval_numerical_gradient_array, rel_error
from fastopt.layers import (batchnorm_backward, batchnorm_backward_alt, batchnorm_forward, dropout_backward,
                            dropout_forward, layernorm_backward, layernorm_forward, spatial_batchnorm_backward,
                            spatial_batchnorm_forward, spatial_groupnorm_backward, spatial_groupnorm_forward)
from fastopt.nn import FullyConnectedNet, TwoLayerNet


@pytest.fixture(autouse=True, params=["cython", "numpy"])
def backend(request):
    """Every cell on the compiled kernels and on their NumPy twins."""
    import fastopt
    from fastopt import _backend
    if request.param == "cython" and not _backend._compiled_available():
        pytest.skip("compiled core not built")
    with _backend.preserved():
        fastopt.set_backend(request.param)
        yield request.param


def _fcn_data():
    np.random.seed(231)
    N, D, H1, H2, C = 2, 15, 20, 30, 10
    X = np.random.randn(N, D)
    y = np.random.randint(C, size=(N,))
    return X, y, (D, H1, H2, C)


def _gradient_errors(model, X, y):
    """The notebook loop: loss once, then a numerical gradient per parameter against those grads."""
    loss, grads = model.loss(X, y)
    errors = {}
    for name in sorted(grads):
        f = lambda _: model.loss(X, y)[0]  # noqa: E731
        grad_num = eval_numerical_gradient(f, model.params[name], verbose=False, h=1e-5)
        errors[name] = rel_error(grad_num, grads[name])
    assert len(model.params.keys()) == len(grads.keys())
    return loss, errors


def _run_cell(cases, build, expected_loss, limit, X, y):
    """A cell's loop over `cases` (reg values, keep ratios): each model built in turn (so each draws its
    weights after the previous one, as in the notebook), its initial loss against expected_loss(case,
    model) and each parameter's relative error against limit(case, name) (None: not checked)."""
    for case in cases:
        model = build(case)
        expected = expected_loss(case, model)
        loss, errors = _gradient_errors(model, X, y)
        assert loss == pytest.approx(expected, rel=1e-12), case
        for name, err in errors.items():
            bound = limit(case, name)
            assert bound is None or err < bound, (case, name, err)


# ---------------------------------------------------------------- FullyConnectedNets.ipynb


def test_fully_connected_net_initial_loss_and_gradient_check():
    X, y, (D, H1, H2, C) = _fcn_data()
    published = {0: 2.3004790897684924, 3.14: 7.052114776533016}
    # Published errors: reg 0: W1 1.48e-07, W2 2.21e-05 ("fine on the order of e-5"), W3 3.53e-07,
    # b <= 5.4e-09; reg 3.14: all <= 6.9e-08.
    _run_cell([0, 3.14],
              lambda reg: FullyConnectedNet([H1, H2], input_dim=D, num_classes=C,
                                            reg=reg, weight_scale=5e-2, dtype=np.float64),
              lambda reg, _: published[reg],
              lambda reg, name: 1e-4 if (reg == 0 and name == "W2") else 1e-6, X, y)


def test_two_layer_net_cell():
    np.random.seed(231)
    N, D, H, C = 3, 5, 50, 7
    X = np.random.randn(N, D)
    y = np.random.randint(C, size=N)

    std = 1e-3
    model = TwoLayerNet(input_dim=D, hidden_dim=H, num_classes=C, weight_scale=std)

    W1_std = abs(model.params['W1'].std() - std)
    b1 = model.params['b1']
    W2_std = abs(model.params['W2'].std() - std)
    b2 = model.params['b2']
    assert W1_std < std / 10, 'First layer weights do not seem right'
    assert np.all(b1 == 0), 'First layer biases do not seem right'
    assert W2_std < std / 10, 'Second layer weights do not seem right'
    assert np.all(b2 == 0), 'Second layer biases do not seem right'

    model.params['W1'] = np.linspace(-0.7, 0.3, num=D * H).reshape(D, H)
    model.params['b1'] = np.linspace(-0.1, 0.9, num=H)
    model.params['W2'] = np.linspace(-0.3, 0.4, num=H * C).reshape(H, C)
    model.params['b2'] = np.linspace(-0.9, 0.1, num=C)
    X = np.linspace(-5.5, 4.5, num=N * D).reshape(D, N).T
    scores = model.loss(X)
    correct_scores = np.asarray(
        [[11.53165108, 12.2917344, 13.05181771, 13.81190102, 14.57198434, 15.33206765, 16.09215096],
         [12.05769098, 12.74614105, 13.43459113, 14.1230412, 14.81149128, 15.49994135, 16.18839143],
         [12.58373087, 13.20054771, 13.81736455, 14.43418138, 15.05099822, 15.66781506, 16.2846319]])
    scores_diff = np.abs(scores - correct_scores).sum()
    assert scores_diff < 1e-6, 'Problem with test-time forward pass'

    y = np.asarray([0, 5, 1])
    loss, grads = model.loss(X, y)
    correct_loss = 3.4702243556
    assert abs(loss - correct_loss) < 1e-10, 'Problem with training-time loss'

    model.reg = 1.0
    loss, grads = model.loss(X, y)
    correct_loss = 26.5948426952
    assert abs(loss - correct_loss) < 1e-10, 'Problem with regularization loss'

    # "Errors should be around e-7 or less" (published max 2.53e-07)
    for reg in [0.0, 0.7]:
        model.reg = reg
        loss, grads = model.loss(X, y)
        for name in sorted(grads):
            f = lambda _: model.loss(X, y)[0]  # noqa: E731
            grad_num = eval_numerical_gradient(f, model.params[name], verbose=False)
            assert rel_error(grad_num, grads[name]) < 1e-6, (reg, name)


# ---------------------------------------------------------------- BatchNormalization.ipynb


def test_batchnorm_forward_train_cell():
    np.random.seed(231)
    N, D1, D2, D3 = 200, 50, 60, 3
    X = np.random.randn(N, D1)
    W1 = np.random.randn(D1, D2)
    W2 = np.random.randn(D2, D3)
    a = np.maximum(0, X.dot(W1)).dot(W2)
    # Published "before": means [-2.3814598 -13.18038246 1.91780462], stds [27.18502186 34.21455511 37.68611762]
    np.testing.assert_allclose(a.mean(axis=0), [-2.3814598, -13.18038246, 1.91780462], rtol=1e-7)

    gamma = np.ones((D3,))
    beta = np.zeros((D3,))
    a_norm, _ = batchnorm_forward(a, gamma, beta, {'mode': 'train'})
    np.testing.assert_allclose(a_norm.mean(axis=0), 0, atol=1e-15)
    np.testing.assert_allclose(a_norm.std(axis=0), [0.99999999, 1., 1.], atol=1e-8)

    gamma = np.asarray([1.0, 2.0, 3.0])
    beta = np.asarray([11.0, 12.0, 13.0])
    a_norm, _ = batchnorm_forward(a, gamma, beta, {'mode': 'train'})
    np.testing.assert_allclose(a_norm.mean(axis=0), [11., 12., 13.], rtol=1e-14)
    np.testing.assert_allclose(a_norm.std(axis=0), [0.99999999, 1.99999999, 2.99999999], atol=1e-8)


def test_batchnorm_forward_test_time_cell():
    np.random.seed(231)
    N, D1, D2, D3 = 200, 50, 60, 3
    W1 = np.random.randn(D1, D2)
    W2 = np.random.randn(D2, D3)

    bn_param = {'mode': 'train'}
    gamma = np.ones(D3)
    beta = np.zeros(D3)

    for t in range(50):
        X = np.random.randn(N, D1)
        a = np.maximum(0, X.dot(W1)).dot(W2)
        batchnorm_forward(a, gamma, beta, bn_param)

    bn_param['mode'] = 'test'
    X = np.random.randn(N, D1)
    a = np.maximum(0, X.dot(W1)).dot(W2)
    a_norm, _ = batchnorm_forward(a, gamma, beta, bn_param)
    # Published: means [-0.03927354 -0.04349152 -0.10452688], stds [1.01531428 1.01238373 0.97819988]
    np.testing.assert_allclose(a_norm.mean(axis=0), [-0.03927354, -0.04349152, -0.10452688], atol=1e-8)
    np.testing.assert_allclose(a_norm.std(axis=0), [1.01531428, 1.01238373, 0.97819988], atol=1e-8)


def _norm_gradient_check(forward, param):
    np.random.seed(231)
    N, D = 4, 5
    x = 5 * np.random.randn(N, D) + 12
    gamma = np.random.randn(D)
    beta = np.random.randn(D)
    dout = np.random.randn(N, D)

    fx = lambda x: forward(x, gamma, beta, param)[0]  # noqa: E731
    fg = lambda a: forward(x, a, beta, param)[0]  # noqa: E731
    fb = lambda b: forward(x, gamma, b, param)[0]  # noqa: E731

    dx_num = eval_numerical_gradient_array(fx, x, dout)
    da_num = eval_numerical_gradient_array(fg, gamma.copy(), dout)
    db_num = eval_numerical_gradient_array(fb, beta.copy(), dout)
    _, cache = forward(x, gamma, beta, param)
    return (dx_num, da_num, db_num), (dout, cache)


def test_batchnorm_backward_cell():
    (dx_num, da_num, db_num), (dout, cache) = _norm_gradient_check(batchnorm_forward, {'mode': 'train'})
    dx, dgamma, dbeta = batchnorm_backward(dout, cache)
    # "You should expect to see relative errors between 1e-13 and 1e-8" (published dx 1.70e-09)
    assert rel_error(dx_num, dx) < 1e-8
    assert rel_error(da_num, dgamma) < 1e-8
    assert rel_error(db_num, dbeta) < 1e-8


def test_batchnorm_backward_alt_cell():
    np.random.seed(231)
    N, D = 100, 500
    x = 5 * np.random.randn(N, D) + 12
    gamma = np.random.randn(D)
    beta = np.random.randn(D)
    dout = np.random.randn(N, D)

    bn_param = {'mode': 'train'}
    out, cache = batchnorm_forward(x, gamma, beta, bn_param)
    dx1, dgamma1, dbeta1 = batchnorm_backward(dout, cache)
    dx2, dgamma2, dbeta2 = batchnorm_backward_alt(dout, cache)
    # Published: dx difference 1.30e-12, dgamma and dbeta 0.0
    assert rel_error(dx1, dx2) < 1e-9
    assert rel_error(dgamma1, dgamma2) < 1e-12
    assert rel_error(dbeta1, dbeta2) < 1e-12


def test_fully_connected_net_batchnorm_cell():
    X, y, (D, H1, H2, C) = _fcn_data()
    published = {0: 2.2611955101340957, 3.14: 6.996533220108303}

    def build(reg):
        return FullyConnectedNet([H1, H2], input_dim=D, num_classes=C,
                                 reg=reg, weight_scale=5e-2, dtype=np.float64,
                                 normalization='batchnorm')

    def limit(reg, name):
        # "You should expect losses between 1e-4~1e-10 for W, 1e-08~1e-10 for b, 1e-08~1e-09 for
        # beta and gammas" (published W1 1.10e-04 at reg 0). b1, b2 feed batchnorm: their gradient
        # is 0 and both sides are rounding noise, which the cell prints as a relative error.
        return None if name in ("b1", "b2") else 1e-3 if name.startswith("W") else 1e-7

    _run_cell([0, 3.14], build, lambda reg, _: published[reg], limit, X, y)
    _, grads = build(0).loss(X, y)
    assert np.abs(grads["b1"]).max() < 1e-12 and np.abs(grads["b2"]).max() < 1e-12


def test_layernorm_forward_cell():
    np.random.seed(231)
    N, D1, D2, D3 = 4, 50, 60, 3
    X = np.random.randn(N, D1)
    W1 = np.random.randn(D1, D2)
    W2 = np.random.randn(D2, D3)
    a = np.maximum(0, X.dot(W1)).dot(W2)

    gamma = np.ones(D3)
    beta = np.zeros(D3)
    a_norm, _ = layernorm_forward(a, gamma, beta, {'mode': 'train'})
    np.testing.assert_allclose(a_norm.mean(axis=1), 0, atol=1e-15)
    np.testing.assert_allclose(a_norm.std(axis=1), [0.99999995, 0.99999999, 1., 0.99999969], atol=1e-8)

    gamma = np.asarray([3.0, 3.0, 3.0])
    beta = np.asarray([5.0, 5.0, 5.0])
    a_norm, _ = layernorm_forward(a, gamma, beta, {'mode': 'train'})
    np.testing.assert_allclose(a_norm.mean(axis=1), 5, rtol=1e-14)
    np.testing.assert_allclose(a_norm.std(axis=1), [2.99999985, 2.99999998, 2.99999999, 2.99999907], atol=1e-8)


def test_layernorm_backward_cell():
    (dx_num, da_num, db_num), (dout, cache) = _norm_gradient_check(layernorm_forward, {})
    dx, dgamma, dbeta = layernorm_backward(dout, cache)
    # "You should expect to see relative errors between 1e-12 and 1e-8" (published dx 1.43e-09)
    assert rel_error(dx_num, dx) < 1e-8
    assert rel_error(da_num, dgamma) < 1e-8
    assert rel_error(db_num, dbeta) < 1e-8


def _cs231n_layernorm_net_loss(params, X, y, reg, eps=1e-5):
    """CS231n's layernorm FullyConnectedNet forward, written out in NumPy (the expected initial loss)."""
    h = X
    for k in (1, 2):
        a = h @ params[f"W{k}"] + params[f"b{k}"]
        mu, var = a.mean(axis=1, keepdims=True), a.var(axis=1, keepdims=True)
        h = np.maximum(params[f"gamma{k}"] * (a - mu) / np.sqrt(var + eps) + params[f"beta{k}"], 0)
    s = h @ params["W3"] + params["b3"]
    s = s - s.max(axis=1, keepdims=True)
    data = -np.mean(s[np.arange(len(y)), y] - np.log(np.exp(s).sum(axis=1)))
    return data + 0.5 * reg * sum((params[f"W{k}"] ** 2).sum() for k in (1, 2, 3))


def test_fully_connected_net_layernorm_cell():
    # No published numbers: the expected initial loss is CS231n's layernorm net written out above.
    X, y, (D, H1, H2, C) = _fcn_data()
    _run_cell([0, 3.14],
              lambda reg: FullyConnectedNet([H1, H2], input_dim=D, num_classes=C,
                                            reg=reg, weight_scale=5e-2, dtype=np.float64,
                                            normalization='layernorm'),
              lambda reg, model: _cs231n_layernorm_net_loss(dict(model.params), X, y, reg),
              lambda reg, name: 1e-3 if name.startswith("W") else 1e-5, X, y)


# ---------------------------------------------------------------- Dropout.ipynb


def test_dropout_forward_cell():
    np.random.seed(231)
    x = np.random.randn(500, 500) + 10
    for p in [0.25, 0.4, 0.7]:
        out, _ = dropout_forward(x, {'mode': 'train', 'p': p, 'seed': 123})
        out_test, _ = dropout_forward(x, {'mode': 'test', 'p': p, 'seed': 123})
        # "Mean of train-time output" ~ mean of input; fraction set to zero ~ 1 - p
        assert abs(out.mean() - x.mean()) < 0.05 * x.mean()
        assert abs((out == 0).mean() - (1 - p)) < 0.01
        assert out_test.mean() == x.mean() and (out_test == 0).mean() == 0


def test_dropout_backward_cell():
    np.random.seed(231)
    x = np.random.randn(10, 10) + 10
    dout = np.random.randn(*x.shape)

    dropout_param = {'mode': 'train', 'p': 0.2, 'seed': 123}
    out, cache = dropout_forward(x, dropout_param)
    dx = dropout_backward(dout, cache)
    dx_num = eval_numerical_gradient_array(lambda xx: dropout_forward(xx, dropout_param)[0], x, dout)
    # "Error should be around e-10 or less" (published 5.45e-11)
    assert rel_error(dx, dx_num) < 1e-9


def test_fully_connected_net_dropout_cell():
    np.random.seed(231)
    N, D, H1, H2, C = 2, 15, 20, 30, 10
    X = np.random.randn(N, D)
    y = np.random.randint(C, size=(N,))

    published = {1: 2.3004790897684924, 0.75: 2.302371489704412, 0.5: 2.3042759220785896}
    # "Relative errors should be around e-6 or less; fine for dropout_keep_ratio=1 to have W2 ~e-5"
    _run_cell([1, 0.75, 0.5],
              lambda keep: FullyConnectedNet([H1, H2], input_dim=D, num_classes=C,
                                             weight_scale=5e-2, dtype=np.float64,
                                             dropout_keep_ratio=keep, seed=123),
              lambda keep, _: published[keep],
              lambda keep, name: 1e-4 if (keep == 1 and name == "W2") else 1e-5, X, y)


def test_fully_connected_net_pre_2019_dropout_keyword():
    # The 2018 notebook's spelling of the same cell: dropout= (probability of keeping a unit).
    X, y, (D, H1, H2, C) = _fcn_data()
    model = FullyConnectedNet([H1, H2], input_dim=D, num_classes=C, weight_scale=5e-2,
                              dtype=np.float64, dropout=1, seed=123)
    assert model.loss(X, y)[0] == pytest.approx(2.3004790897684924, rel=1e-13)
    X, y, _ = _fcn_data()
    FullyConnectedNet([H1, H2], input_dim=D, num_classes=C, weight_scale=5e-2, dtype=np.float64)  # keep=1 draws
    model = FullyConnectedNet([H1, H2], input_dim=D, num_classes=C, weight_scale=5e-2,
                              dtype=np.float64, dropout=0.75, seed=123)
    assert model.loss(X, y)[0] == pytest.approx(2.302371489704412, rel=1e-13)


# ---------------------------------------------------------------- ConvolutionalNetworks.ipynb


def test_spatial_batchnorm_forward_train_cell():
    np.random.seed(231)
    N, C, H, W = 2, 3, 4, 5
    x = 4 * np.random.randn(N, C, H, W) + 10

    gamma, beta = np.ones(C), np.zeros(C)
    bn_param = {'mode': 'train'}
    out, _ = spatial_batchnorm_forward(x, gamma, beta, bn_param)
    assert out.shape == x.shape
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-14)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1, atol=1e-6)

    gamma, beta = np.asarray([3, 4, 5]), np.asarray([6, 7, 8])     # integer arrays, as the notebook
    out, _ = spatial_batchnorm_forward(x, gamma, beta, bn_param)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), [6, 7, 8], rtol=1e-14)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), [3, 4, 5], rtol=1e-6)


def test_spatial_batchnorm_forward_test_time_cell():
    np.random.seed(231)
    N, C, H, W = 10, 4, 11, 12
    bn_param = {'mode': 'train'}
    gamma = np.ones(C)
    beta = np.zeros(C)
    for t in range(50):
        x = 2.3 * np.random.randn(N, C, H, W) + 13
        spatial_batchnorm_forward(x, gamma, beta, bn_param)
    bn_param['mode'] = 'test'
    x = 2.3 * np.random.randn(N, C, H, W) + 13
    a_norm, _ = spatial_batchnorm_forward(x, gamma, beta, bn_param)
    # "Means should be close to zero and stds close to one, but noisier than training-time"
    # (after 50 steps of momentum 0.9 the running statistics still carry 0.9**50 of their zero start).
    np.testing.assert_allclose(a_norm.mean(axis=(0, 2, 3)), 0, atol=0.15)
    np.testing.assert_allclose(a_norm.std(axis=(0, 2, 3)), 1, atol=0.05)
    rm, rv = bn_param['running_mean'], bn_param['running_var']
    expected = (x - rm[None, :, None, None]) / np.sqrt(rv[None, :, None, None] + 1e-5)
    np.testing.assert_allclose(a_norm, expected, rtol=1e-12, atol=1e-12)


def test_spatial_batchnorm_backward_cell():
    np.random.seed(231)
    N, C, H, W = 2, 3, 4, 5
    x = 5 * np.random.randn(N, C, H, W) + 12
    gamma = np.random.randn(C)
    beta = np.random.randn(C)
    dout = np.random.randn(N, C, H, W)

    bn_param = {'mode': 'train'}
    fx = lambda x: spatial_batchnorm_forward(x, gamma, beta, bn_param)[0]  # noqa: E731
    fg = lambda a: spatial_batchnorm_forward(x, gamma, beta, bn_param)[0]  # noqa: E731
    fb = lambda b: spatial_batchnorm_forward(x, gamma, beta, bn_param)[0]  # noqa: E731

    dx_num = eval_numerical_gradient_array(fx, x, dout)
    da_num = eval_numerical_gradient_array(fg, gamma, dout)
    db_num = eval_numerical_gradient_array(fb, beta, dout)

    _, cache = spatial_batchnorm_forward(x, gamma, beta, bn_param)
    dx, dgamma, dbeta = spatial_batchnorm_backward(dout, cache)
    # "You should expect errors of magnitudes between 1e-12~1e-06"
    assert rel_error(dx_num, dx) < 1e-6
    assert rel_error(da_num, dgamma) < 1e-6
    assert rel_error(db_num, dbeta) < 1e-6


def test_spatial_groupnorm_forward_cell():
    np.random.seed(231)
    N, C, H, W = 2, 6, 4, 5
    G = 2
    x = 4 * np.random.randn(N, C, H, W) + 10
    x_g = x.reshape((N * G, -1))
    # Published "before": means [9.72505327 8.51114185 8.9147544 9.43448077]
    np.testing.assert_allclose(x_g.mean(axis=1), [9.72505327, 8.51114185, 8.9147544, 9.43448077], atol=1e-8)

    gamma, beta = np.ones((1, C, 1, 1)), np.zeros((1, C, 1, 1))
    bn_param = {'mode': 'train'}

    out, _ = spatial_groupnorm_forward(x, gamma, beta, G, bn_param)
    out_g = out.reshape((N * G, -1))
    assert out.shape == (2, 6, 4, 5)
    np.testing.assert_allclose(out_g.mean(axis=1), 0, atol=1e-14)
    # "stds close to one": exactly sqrt(var / (var + eps)) with eps = 1e-5 (the published
    # 0.9999983.. come from a student's implementation with a different eps handling)
    var = x_g.var(axis=1)
    np.testing.assert_allclose(out_g.std(axis=1), np.sqrt(var / (var + 1e-5)), rtol=1e-13)


def test_spatial_groupnorm_backward_cell():
    np.random.seed(231)
    N, C, H, W = 2, 6, 4, 5
    G = 2
    x = 5 * np.random.randn(N, C, H, W) + 12
    gamma = np.random.randn(1, C, 1, 1)
    beta = np.random.randn(1, C, 1, 1)
    dout = np.random.randn(N, C, H, W)

    gn_param = {}
    fx = lambda x: spatial_groupnorm_forward(x, gamma, beta, G, gn_param)[0]  # noqa: E731
    fg = lambda a: spatial_groupnorm_forward(x, gamma, beta, G, gn_param)[0]  # noqa: E731
    fb = lambda b: spatial_groupnorm_forward(x, gamma, beta, G, gn_param)[0]  # noqa: E731

    dx_num = eval_numerical_gradient_array(fx, x, dout)
    da_num = eval_numerical_gradient_array(fg, gamma, dout)
    db_num = eval_numerical_gradient_array(fb, beta, dout)

    _, cache = spatial_groupnorm_forward(x, gamma, beta, G, gn_param)
    dx, dgamma, dbeta = spatial_groupnorm_backward(dout, cache)
    # "You should expect errors of magnitudes between 1e-12~1e-07" (published dx 5.07e-08)
    assert rel_error(dx_num, dx) < 1e-7
    assert rel_error(da_num, dgamma) < 1e-7
    assert rel_error(db_num, dbeta) < 1e-7

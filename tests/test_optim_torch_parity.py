"""fastopt.optim classes against torch.optim (float64, ~10 steps), where PyTorch is installed."""
import numpy as np
import pytest

from fastopt import optim

torch = pytest.importorskip("torch")

COMBOS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1, maximize=True)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05, weight_decay=0.01, initial_accumulator_value=0.2, eps=1e-6)),
    ("Adagrad", dict(lr=0.1, maximize=True)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, centered=True)),
    ("RMSprop", dict(lr=0.01, momentum=0.9, weight_decay=0.01, eps=1e-6)),
    ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True, maximize=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.05)),
    ("Adam", dict(lr=0.01, amsgrad=True, maximize=True, eps=1e-6)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.3, amsgrad=True)),
    ("AdamW", dict(lr=0.01, betas=(0.5, 0.9), maximize=True)),
]


def torch_opt(name, tensors, groups_kwargs, kwargs):
    groups = [{"params": [tensors[i] for i in idx], **extra} for idx, extra in groups_kwargs]
    return getattr(torch.optim, name)(groups, foreach=False, **kwargs)


@pytest.mark.parametrize("name, kwargs", COMBOS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(COMBOS)])
def test_matches_torch_optim(name, kwargs, rng):
    shapes = [(4, 3), (5,), (2, 2, 2)]
    arrays = [rng.standard_normal(s) for s in shapes]
    tensors = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    groups = [([0, 1], {}), ([2], {"lr": kwargs["lr"] * 3})]
    mine = getattr(optim, name)([{"params": [arrays[i] for i in idx], **extra} for idx, extra in groups],
                                **kwargs)
    theirs = torch_opt(name, tensors, groups, kwargs)
    for step in range(10):
        grads = [rng.standard_normal(s) for s in shapes]
        if step == 6:  # a schedule edit between steps, seen by both
            for g_mine, g_theirs in zip(mine.param_groups, theirs.param_groups):
                g_mine["lr"] *= 0.5
                g_theirs["lr"] *= 0.5
        for t, g in zip(tensors, grads):
            t.grad = torch.tensor(g.copy())
        theirs.step()
        mine.step(grads)
    for a, t in zip(arrays, tensors):
        np.testing.assert_allclose(a, t.detach().numpy(), rtol=1e-10, atol=1e-13)
    # The state agrees too (torch keys, per-parameter step).
    for i, t in enumerate(tensors):
        st_theirs = theirs.state[t]
        for key, value in mine.state[i].items():
            if key == "step":
                assert value == int(st_theirs["step"])
            elif value.size and st_theirs.get(key) is not None:
                np.testing.assert_allclose(value, st_theirs[key].numpy(), rtol=1e-10, atol=1e-13, err_msg=key)


def test_momentum_buffer_matches_torch_none_semantics(rng):
    """SGD's buffer starts as the first gradient seen with momentum on, as torch's None buffer does."""
    a = rng.standard_normal(6)
    t = torch.tensor(a.copy(), requires_grad=True)
    mine, theirs = optim.SGD([a], lr=0.1), torch.optim.SGD([t], lr=0.1, foreach=False)
    for step in range(6):
        if step == 2:
            mine.param_groups[0]["momentum"] = 0.9
            theirs.param_groups[0]["momentum"] = 0.9
        g = rng.standard_normal(6)
        t.grad = torch.tensor(g.copy())
        theirs.step()
        mine.step([g])
    np.testing.assert_allclose(a, t.detach().numpy(), rtol=1e-12, atol=1e-14)

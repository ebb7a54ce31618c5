"""Count the optimizer kernel calls a step makes (the API calls kernels with keywords only)."""
from fastopt import _backend


def count_kernel_calls(monkeypatch):
    """Route _backend.kernels("optim") through a recorder; returns the list of kernel names called."""
    k = _backend.kernels("optim")
    calls = []

    class Counting:
        GRAIN = k.GRAIN

        def __getattr__(self, name):
            fn = getattr(k, name)
            if not callable(fn):
                return fn

            def wrapped(*args, **kwargs):
                assert not args, "kernels are called with keywords only"
                calls.append(name)
                return fn(**kwargs)
            return wrapped
    monkeypatch.setattr(_backend, "kernels", lambda family: Counting())
    return calls

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
                if name == "run_cached":
                    return record_cached(calls, fn, args, lambda kernel, n: kernel)
                assert not args, "kernels are called with keywords only"
                calls.append(name)
                return fn(**kwargs)
            return wrapped
    monkeypatch.setattr(_backend, "kernels", lambda family: Counting())
    return calls


def record_cached(calls, fn, args, entry):
    """Call the cached step fn(program, ...) and append entry(kernel, n_threads) to calls for each
    group's multi-tensor pass it ran (none when it declined): the cached step is one compiled call
    that runs <rule>_multi's pass once per group, on the threads its program reports."""
    ran = fn(*args)
    if ran:
        program = args[0]
        calls.extend(entry(program.kernel, n) for n in program.last_threads)
    return ran

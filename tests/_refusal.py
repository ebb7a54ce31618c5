"""The check behind every "bad input changes nothing" test: `call` raises `error` matching `match`,
and every array of `params` (a mapping name -> array, read again after the call) is as before."""
import numpy as np
import pytest


def refused_unchanged(params, call, error, match):
    before = {k: v.copy() for k, v in params.items()}
    with pytest.raises(error, match=match):
        call()
    assert all(np.array_equal(before[k], params[k]) for k in before)

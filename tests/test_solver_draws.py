"""The seeded Solver's minibatches drawn ahead (fastopt.solver._sampling.SeededDraws): the same
indices and the same Generator state as one ``integers`` call per minibatch, whenever the state is
read (state(), batch_rng, a checkpoint) or changed (set_state, another shape)."""
import numpy as np
import pytest

from fastopt.solver._sampling import SeededDraws


def _one_call_each(seed):
    """The stream as the Solver drew it before: a Generator spawned as SeededDraws spawns it."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[0])


@pytest.mark.parametrize("n, size, steps", [(1258, 64, 100), (7, 3, 65), (1, 1, 5), (2**33 + 5, 5, 40), (1000, 1, 33)])
def test_indices_and_state_are_those_of_one_draw_per_minibatch(n, size, steps):
    draws, ref = SeededDraws(3), _one_call_each(3)
    for step in range(steps):
        got, want = draws.batch(n, size), ref.integers(0, n, size=size)
        assert got.dtype == want.dtype and np.array_equal(got, want), step
        if step % 13 == 5:    # a state read mid-block rewinds to exactly the reference's state
            assert draws.state()["batch"] == ref.bit_generator.state
    assert draws.batch_rng.bit_generator.state == ref.bit_generator.state
    # after the read, the stream goes on from there
    assert np.array_equal(draws.batch(n, size), ref.integers(0, n, size=size))


def test_a_draw_of_another_shape_continues_the_stream():
    draws, ref = SeededDraws(0), _one_call_each(0)
    for n, size in [(100, 8)] * 3 + [(50, 8), (50, 3)] * 2 + [(100, 8)]:
        assert np.array_equal(draws.batch(n, size), ref.integers(0, n, size=size))
    assert draws.state()["batch"] == ref.bit_generator.state


def test_set_state_drops_the_block_drawn_ahead():
    draws = SeededDraws(1)
    saved = draws.state()
    first = [draws.batch(30, 4).copy() for _ in range(5)]
    draws.set_state(saved)
    assert all(np.array_equal(draws.batch(30, 4), f) for f in first)


def test_a_callers_own_draw_from_batch_rng_comes_between_the_minibatches():
    """solver.rng (batch_rng) drawn from between steps moves the next minibatch, as before."""
    draws, ref = SeededDraws(2), _one_call_each(2)
    for _ in range(3):
        draws.batch(40, 6)
        ref.integers(0, 40, size=6)
    assert draws.batch_rng.random() == ref.random()
    assert np.array_equal(draws.batch(40, 6), ref.integers(0, 40, size=6))


def test_the_rows_handed_out_are_read_only():
    idx = SeededDraws(0).batch(10, 4)
    with pytest.raises(ValueError):
        idx[0] = 1



def test_a_seeded_solver_draws_the_minibatches_of_one_call_per_step(tmp_path):
    """Through the Solver: the rows each step gathers, the stream's state after steps that end
    mid-block (as solver.rng and a checkpoint see it), and an exact resume from that checkpoint."""
    from _nn_data import blob_data

    from fastopt.nn import FullyConnectedNet
    from fastopt.solver import Solver

    data = blob_data()
    n = data["X_train"].shape[0]

    def model():
        return FullyConnectedNet([8], input_dim=data["X_train"].shape[1], num_classes=3, rng=2,
                                 normalization="batchnorm")

    s = Solver(model(), data, update_rule="adam", batch_size=7, num_epochs=1, verbose=False, seed=9)
    seen, batch = [], s._draws.batch
    s._draws.batch = lambda n, size: seen.append(batch(n, size).copy()) or seen[-1]
    ref = _one_call_each(9)
    steps = SeededDraws.AHEAD + 5
    for _ in range(steps):
        s._step()
    assert len(seen) == steps
    for got in seen:
        assert np.array_equal(got, ref.integers(0, n, size=7))
    s._t = steps                      # what train() counts
    path = s.save_checkpoint(tmp_path / "c.pkl")
    assert s.rng.bit_generator.state == ref.bit_generator.state
    resumed = Solver.from_checkpoint(path, model(), data)
    for _ in range(SeededDraws.AHEAD):
        assert s._step() == resumed._step()
    for k in s.model.params:
        assert np.array_equal(s.model.params[k], resumed.model.params[k]), k

"""``iter_batches``: exactly the trainer's batches, for any loop (streamtrain.loader)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import streamtrain
import streamtrain.train
from streamtrain import ConfigError, Cursor, iter_batches


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "d.zarr"
    streamtrain.make_data(path, m=1000, n_x=3, chunk=128, seed=1, task="softmax", classes=3)
    return path


def _trainer_batches(monkeypatch, store, **options):
    """The (X, Y) of every step ``fit`` takes with these options, in order (not the chunks it reads
    once before, for the loss its divergence check starts from)."""
    seen, stepping = [], [True]
    step, start = streamtrain.train.batch_objective, streamtrain.train.Run._starting_loss

    def recording(model, params, X, Y, **kw):
        if stepping[0]:
            seen.append((X.copy(), Y.copy()))
        return step(model, params, X, Y, **kw)

    def starting_loss(run, params):
        stepping[0] = False
        try:
            return start(run, params)
        finally:
            stepping[0] = True

    monkeypatch.setattr(streamtrain.train, "batch_objective", recording)
    monkeypatch.setattr(streamtrain.train.Run, "_starting_loss", starting_loss)
    streamtrain.fit(store, model="softmax", epochs=2, progress=False, **options)
    return seen


@pytest.mark.parametrize("shuffle", ["none", "chunks", "buffer"])
def test_the_batches_are_the_ones_fit_steps_on(monkeypatch, store, shuffle):
    options = {"batch_size": 48, "shuffle": shuffle, "seed": 7, "buffer_mb": 0.01}
    seen = _trainer_batches(monkeypatch, store, **options)
    loaded = [b for epoch in (0, 1) for b in iter_batches(store, epoch=epoch, **options)]
    assert len(seen) == len(loaded) == 2 * -(-1000 // 48)
    for (X, Y), batch in zip(seen, loaded):
        np.testing.assert_array_equal(batch.X, X)
        np.testing.assert_array_equal(batch.Y, Y)
        assert batch.X.dtype == np.float32


def test_a_cursor_continues_the_epoch_exactly_and_samples_may_come_first(store):
    options = {"batch_size": 50, "shuffle": "buffer", "seed": 3, "buffer_mb": 0.01}
    whole = list(iter_batches(store, epoch=2, **options))
    after = whole[6].cursor.to_dict()  # as a loop's own checkpoint keeps it (JSON)
    rest = list(iter_batches(store, cursor=after, **options))
    assert len(rest) == len(whole) - 7
    for a, b in zip(whole[7:], rest):
        np.testing.assert_array_equal(a.X, b.X)
        assert a.cursor == b.cursor
    first = next(iter_batches(store, epoch=2, samples_first=True, **options))
    assert first.X.shape == (50, 3) and first.Y.shape == (50, 1)
    np.testing.assert_array_equal(first.X, whole[0].X.T)


def test_a_torch_loop_fed_by_it_takes_fits_steps(store):
    """Softmax regression in PyTorch, from zeros, with plain SGD on the same batches: fit's model."""
    torch = pytest.importorskip("torch")
    net = torch.nn.Linear(3, 3)
    torch.nn.init.zeros_(net.weight), torch.nn.init.zeros_(net.bias)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for epoch in range(2):
        for batch in iter_batches(store, epoch=epoch, batch_size=64, samples_first=True):
            x, y = torch.from_numpy(batch.X), torch.from_numpy(batch.Y[:, 0]).long()
            loss = torch.nn.functional.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    fitted = streamtrain.fit(store, model="softmax", batch_size=64, lr=0.5, epochs=2, progress=False)
    np.testing.assert_allclose(net.weight.detach().numpy(), fitted.params["W1"], atol=2e-5)
    np.testing.assert_allclose(net.bias.detach().numpy()[:, None], fitted.params["b1"], atol=2e-5)


def test_options_are_fits_own_and_checked(store):
    with pytest.raises(ConfigError, match="iter_batches takes no option 'lr'"):
        next(iter_batches(store, lr=0.1))
    with pytest.raises(ConfigError, match="shuffle"):
        next(iter_batches(store, shuffle="random"))
    (full,) = iter_batches(store, batch_size="full", shuffle="none")
    assert full.X.shape == (3, 1000) and full.cursor == Cursor(0, 0, 8, 0, 1)
    assert len(list(itertools.islice(iter_batches(store), 3))) == 3  # fit's defaults: batches of 256

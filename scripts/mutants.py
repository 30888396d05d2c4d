"""The hand-made mutants ``mutate.py`` applies: one small bug each, the kind that matters.

Each entry replaces ``original`` (a snippet that must occur exactly once in ``path``) with
``mutated``. ``equivalent`` says why a mutant changes nothing a caller can observe; such
mutants are listed but not run, and left out of the score. When the code moves on, a snippet
may no longer be found: ``mutate.py --check`` lists those, and the entry is updated here.
"""

from __future__ import annotations

from typing import NamedTuple


class Mutant(NamedTuple):
    name: str
    path: str  # relative to the repository root
    original: str
    mutated: str
    reason: str  # the bug it stands for
    equivalent: str = ""  # why no test can see it (then it is not run)


MODELS, OPTIM, BATCHES = "streamtrain/models.py", "streamtrain/optim.py", "streamtrain/batches.py"
LAYERS = "streamtrain/layers.py"
BASE, LABELS = "streamtrain/sources/_base.py", "streamtrain/labels.py"
ZARR, HDF5 = "streamtrain/sources/_zarr.py", "streamtrain/sources/_hdf5.py"
CHECKPOINT, COMPARE, TRAIN = "streamtrain/checkpoint.py", "streamtrain/compare.py", "streamtrain/train.py"
INTEGRITY, STAMP = "streamtrain/sources/_integrity.py", "streamtrain/sources/_stamp.py"
RESUME, SIGNALS, OUTPUTS = "streamtrain/resume.py", "streamtrain/_signals.py", "streamtrain/outputs.py"
DIVERGENCE, PARAMETERS = "streamtrain/divergence.py", "streamtrain/parameters.py"
BUFFERS, RUN_START = "streamtrain/_buffers.py", "streamtrain/_run_start.py"
TRAINING_DATA = "streamtrain/training_data.py"
SHARDS, SHARDED_RUN, VIEW = "streamtrain/shards.py", "streamtrain/_sharded_run.py", "streamtrain/sources/_view.py"

# Which test files cover a module: only these run for its mutants (the first ones fail fastest).
TESTS = {
    MODELS: ("test_models.py", "test_train.py", "test_compare.py", "test_full_batch.py"),
    LAYERS: ("test_models.py", "test_train.py", "test_compare.py", "test_full_batch.py"),
    OPTIM: ("test_optim.py", "test_train.py"),
    BATCHES: ("test_batches.py", "test_train.py", "test_compare.py"),
    BUFFERS: ("test_batches.py", "test_train.py", "test_compare.py"),
    BASE: ("test_sources.py", "test_batches.py"),
    LABELS: ("test_sources.py", "test_batches.py", "test_full_batch.py"),
    ZARR: ("test_sources.py",),
    HDF5: ("test_sources.py",),
    CHECKPOINT: ("test_checkpoint.py", "test_model_files.py", "test_train.py", "test_config.py", "test_resume.py"),
    COMPARE: ("test_compare.py",),
    TRAIN: ("test_train.py", "test_resume.py", "test_divergence.py", "test_full_batch.py", "test_cli.py"),
    RUN_START: ("test_train.py", "test_resume.py", "test_divergence.py", "test_train_state.py"),
    TRAINING_DATA: ("test_train.py", "test_model_files.py", "test_train_state.py", "test_holdout.py"),
    # issue 14's --shards (the cluster tests start LocalClusters: a mutant takes about a minute)
    SHARDS: ("test_shards.py",),
    SHARDED_RUN: ("test_shards.py",),
    VIEW: ("test_integrity.py", "test_holdout.py"),
    # issue 10's reliability code (its mutants: mutants_reliability.py)
    # test_direct.py: damaged chunks read through the storage library (the fallback of the direct reads)
    INTEGRITY: ("test_sources.py", "test_integrity.py", "test_full_batch.py", "test_train.py", "test_direct.py"),
    STAMP: ("test_sources.py", "test_resume.py"),
    RESUME: ("test_resume.py",),
    DIVERGENCE: ("test_divergence.py", "test_resume.py"),
    SIGNALS: ("test_resume.py",),
    OUTPUTS: ("test_outputs.py", "test_synthetic.py"),
    PARAMETERS: ("test_models.py", "test_model_files.py", "test_train.py"),
}

M = Mutant
MUTANTS = [
    # -- models: the maths -------------------------------------------------------------------------
    M("models-softplus-sign", LAYERS, "np.exp(-np.abs(Z))", "np.exp(np.abs(Z))", "sign: log1p(e^|z|)"),
    M("models-sigmoid-scale", LAYERS, "np.tanh(0.5 * Z)", "np.tanh(Z)", "dropped factor in sigmoid"),
    M(
        "models-relu-grad-at-0",
        LAYERS,
        "lambda Z, A: Z > 0,",
        "lambda Z, A: Z >= 0,",
        "relu' at z = 0",
        equivalent="relu has no derivative at 0: 0 and 1 are both valid subgradients",
    ),
    M("models-he-init", LAYERS, "lambda n_in, n: 2.0 / n_in", "lambda n_in, n: 1.0 / n_in", "He variance halved"),
    M("models-xavier-init", LAYERS, "return 2.0 / (n_in + n)", "return 1.0 / (n_in + n)", "Xavier variance halved"),
    M("models-tanh-grad", LAYERS, "1.0 - A * A", "1.0 - A", "tanh' = 1 - a, not 1 - a²"),
    M("models-sigmoid-grad", LAYERS, "A * (1.0 - A)", "A * (1.0 + A)", "sign in sigmoid'"),
    M("models-softmax-shift-axis", LAYERS, "Z - Z.max(axis=0,", "Z - Z.max(axis=1,", "wrong axis: max over rows"),
    M("models-softmax-sum-axis", LAYERS, "E.sum(axis=0, keepdims=True)", "E.sum(axis=1, keepdims=True)", "wrong axis"),
    M("models-sigmoid-loss-sign", LAYERS, "softplus(Z) - Y * Z", "softplus(Z) + Y * Z", "sign in cross-entropy"),
    M("models-sigmoid-class-at-0", LAYERS, "return A >= 0.5", "return A > 0.5", "issue 10 #20: z = 0 as class 0"),
    M("models-sigmoid-rows-any", LAYERS, "hit.all(axis=0)", "hit.any(axis=0)", "multi-row: one right row is enough"),
    M(
        "models-softmax-loss-sign",
        LAYERS,
        "log_total.sum(dtype=np.float64) - (Y * S)",
        "log_total.sum(dtype=np.float64) + (Y * S)",
        "sign in softmax cross-entropy",
    ),
    M("models-softmax-correct", LAYERS, "Z.argmax(axis=0) == Y", "Z.argmin(axis=0) == Y", "argmin for argmax"),
    M("models-squared-half", LAYERS, "loss = 0.5 * (float(squares", "loss = (float(squares", "dropped ½"),
    M("models-softmax-predict-axis", LAYERS, "A.argmax(axis=0)[None, :]", "A.argmax(axis=-1)[None, :]", "wrong axis"),
    M(
        "models-class-ids-off-by-one",
        MODELS,
        "np.arange(n_out, dtype=Y.dtype)[:, None] == Y",
        "np.arange(1, n_out + 1, dtype=Y.dtype)[:, None] == Y",
        "class ids counted from 1",
    ),
    M("models-no-bias", MODELS, '@ As[-1] + params[f"b{l}"]', "@ As[-1]", "dropped term: + b"),
    M(
        "models-output-activation",
        MODELS,
        "if l < L:",
        "if l <= L:",
        "< vs <=: an extra activation",
        equivalent="the output layer's extra activation is appended but never read",
    ),
    M("models-grad-b-axis", MODELS, "dZ.sum(axis=1, keepdims=True)", "dZ.sum(axis=0, keepdims=True)", "wrong axis"),
    M("models-grad-sq-bias", MODELS, "* (a_sq + 1.0)", "* a_sq", "dropped term: the bias's share of ‖g_i‖²"),
    M(
        "models-backprop-derivative",
        MODELS,
        '(params[f"W{l}"].T @ dZ) * derivative(Zs[l - 2], A_prev)',
        '(params[f"W{l}"].T @ dZ)',
        "dropped g'(Z) in backprop",
    ),
    M("models-l2-loss-half", MODELS, "l2 / (2 * m)", "l2 / m", "L2 loss without ½"),
    M("models-l2-grad-n", MODELS, "(l2 / m) * W", "(l2 / n) * W", "L2 gradient scaled by the batch, not m"),
    M(
        "models-l2-penalises-b",
        MODELS,
        'for k, W in params.items() if k.startswith("W")]',
        "for k, W in params.items()]",
        "skipped filter: b penalised",
    ),
    M("models-add-correct", MODELS, "a.correct + b.correct", "a.correct", "dropped term when adding sums"),
    M("models-add-grad-sq", MODELS, "a.grad_sq + b.grad_sq", "a.grad_sq", "dropped term when adding sums"),
    M("models-norm-sqrt", MODELS, "return math.sqrt(sum(", "return (sum(", "norm² for norm"),
    M(
        "models-check-params-shapes",
        PARAMETERS,
        "if got != expected:",
        "if got.keys() != expected.keys():",
        "skipped check",
    ),
    M("models-mean-grad", MODELS, "g / n for k, g in", "g / m for k, g in", "gradient mean over m, not the batch"),
    M("models-mean-loss", MODELS, "loss = totals.loss / n", "loss = totals.loss / m", "loss mean over m"),
    M("models-as-float64", MODELS, "np.asarray(v, dtype=np.float64)", "np.asarray(v)", "float32 sums in float32"),
    M(
        "models-zero-init",
        MODELS,
        'if name.startswith("b") or not self.hidden:',
        'if name.startswith("b"):',
        "1-layer init random",
    ),
    # -- optim ------------------------------------------------------------------------------------
    M("optim-average-weight", OPTIM, "beta * average + (1 - beta) * x", "beta * average + x", "dropped (1 - β)"),
    M(
        "optim-average-swapped",
        OPTIM,
        "beta * average + (1 - beta) * x",
        "(1 - beta) * average + beta * x",
        "swapped weights",
    ),
    M("optim-t-off-by-one", OPTIM, "int(state.step) + 1", "int(state.step) + 2", "off-by-one in Adam's t"),
    M("optim-eps-inside-sqrt", OPTIM, "(np.sqrt(s_hat) + eps)", "np.sqrt(s_hat + eps)", "ε inside the root"),
    M("optim-no-eps", OPTIM, "(np.sqrt(s_hat) + eps)", "np.sqrt(s_hat)", "dropped ε"),
    M("optim-sign", OPTIM, "new[k] = p - a * direction\n", "new[k] = p + a * direction\n", "sign: ascent"),
    M("optim-bias-v", OPTIM, "_unbiased(direction, c1)", "_unbiased(direction, c2)", "swapped corrections"),
    M("optim-bias-s", OPTIM, "_unbiased(s_hat, c2)", "_unbiased(s_hat, c1)", "swapped corrections"),
    M("optim-s-of-abs", OPTIM, "state.s[k], g**2, beta2", "state.s[k], np.abs(g), beta2", "|g| averaged, not g²"),
    M("optim-step-count", OPTIM, "OptimizerState(t, v, s)", "OptimizerState(state.step, v, s)", "step not advanced"),
    M("optim-lr-at-next", OPTIM, "float(lr(step))", "float(lr(step + 1))", "off-by-one: rate of the next step"),
    M("optim-inverse-time", OPTIM, "lr / (1 + d * t)", "lr / (1 + t)", "dropped decay"),
    M(
        "optim-exponential",
        OPTIM,
        "lr * _power(d, t), 0.95",
        "lr * _power(d, t + 1), 0.95",
        "off-by-one: decayed from step 0",
    ),
    M("optim-step-schedule", OPTIM, "lr * _power(d, t // n)", "lr * _power(d, (t + 1) // n)", "off-by-one"),
    M("optim-exp-decay-1", OPTIM, "0.95, lambda d: 0 < d <= 1", "0.95, lambda d: 0 < d < 1", "<= vs <: 1 refused"),
    M("optim-inverse-decay-0", OPTIM, "1.0, lambda d: d >= 0", "1.0, lambda d: d > 0", ">= vs >: 0 refused"),
    M("optim-beta-1", OPTIM, "lambda v: 0 <= v < 1", "lambda v: 0 <= v <= 1", "< vs <=: β = 1 accepted"),
    M("optim-lr-0", OPTIM, "lambda v: v > 0, ", "lambda v: v >= 0, ", "> vs >=: α = 0 accepted"),
    M("optim-default-decay", OPTIM, "return kind.default_decay", "return None", "default decay dropped"),
    M("optim-betas-swapped", OPTIM, "rule, beta1, beta2, _positive", "rule, beta2, beta1, _positive", "swapped args"),
    M("optim-every-ignored", OPTIM, "d, step // every, step_size", "d, step, step_size", "per-epoch is per-step"),
    # -- batches ----------------------------------------------------------------------------------
    M(
        "batches-same-permutation",
        BATCHES,
        "[self.cursor.seed, self.cursor.epoch, 1, pos]",
        "[self.cursor.seed, self.cursor.epoch, 1]",
        "issue 10 #16: one column permutation for every unit",
    ),
    M("batches-offset-at-end", BATCHES, "if i >= n and n:", "if i > n and n:", "issue 10 #17: offset = n accepted"),
    M("batches-order-epoch", BATCHES, "default_rng([seed, epoch, 0])", "default_rng([seed, 0, 0])", "same each epoch"),
    M(
        "batches-budget-units",
        BATCHES,
        "buffer_bytes // (max(prefetch, 0) + 2 + READERS)",
        "buffer_bytes // (max(prefetch, 0) + 1 + READERS)",
        "off-by-one in budget",
    ),
    M("batches-budget-y", BATCHES, "((source.n_x + source.k) *", "((source.n_x) *", "dropped term: Y's bytes"),
    M("batches-budget-min-1", BATCHES, "max(1, unit_bytes //", "(unit_bytes //", "skipped floor: 0 chunks"),
    M("batches-budget-chunk", BATCHES, "max(b - a for a, b", "min(b - a for a, b", "smallest chunk sizes the units"),
    M(
        "batches-position-end",
        BATCHES,
        "<= cursor.position <= source.n_chunks",
        "<= cursor.position < source.n_chunks",
        "<=",
    ),
    M(
        "batches-position-unit",
        BATCHES,
        "(cursor.position % self.chunks_per_unit and not at_end)",
        "(False and not at_end)",
        "skipped check: a cursor inside a unit",
    ),
    M(
        "batches-offset-every-unit",
        BATCHES,
        "i = c.offset if pos == c.position else 0",
        "i = c.offset",
        "offset reused",
    ),
    M(
        "batches-take",
        BATCHES,
        "while i < n:\n                    take = min(B - have, n - i)",
        "while i < n:\n                    take = min(B, n - i)",
        "dropped term: batch overfills",
    ),
    M("batches-resume-offset", BATCHES, "else (pos, i)", "else (pos, i + 1)", "off-by-one in the resume offset"),
    M(
        "batches-next-unit",
        BATCHES,
        "next_unit = min(pos + self.chunks_per_unit, self.source.n_chunks)",
        "next_unit = pos + self.chunks_per_unit",
        "skipped clamp: cursor past the end",
    ),
    M(
        "batches-short-last",
        BATCHES,
        "pending, have = [], 0\n            if pending:",
        "pending, have = [], 0\n            if False:",
        "short last batch dropped",
    ),
    M("batches-join-axis", BATCHES, "[p[1] for p in pieces], axis=1)", "[p[1] for p in pieces], axis=0)", "wrong axis"),
    M("batches-labels-unshuffled", BATCHES, "Y = permute(Y, np.empty_like(Y))", "Y = Y", "labels not permuted with X"),
    M(
        "batches-unit-overread",
        BATCHES,
        "chunks = self.order[pos : pos + self.chunks_per_unit]",
        "chunks = self.order[pos : pos + self.chunks_per_unit + 1]",
        "off-by-one",
    ),
    M(
        "batches-queue-depth",
        BUFFERS,
        "while len(self._pending) < self._depth:",
        "while len(self._pending) <= self._depth:",
        "off-by-one: one more unit read ahead than the depth",
    ),
    M(
        "batches-error-swallowed",
        BUFFERS,
        "item = future.result()",
        "if future.exception() is not None:\n                return\n            item = future.result()",
        "skipped raise: a read error ends the epoch early, silently",
    ),
    M(
        "batches-labels-unchecked",
        BATCHES,
        "a, b, labels=self.labels, into=None",
        "a, b, into=None",
        "skipped check",
    ),
    M("batches-close-no-stop", BUFFERS, "if self._pool is not None:", "if False:", "close() never stops the threads"),
    M("batches-cursor-ints", BATCHES, "int(d.get(f.name, 0))", "d.get(f.name, 0)", "NumPy ints kept in a cursor"),
    # -- sources and labels -----------------------------------------------------------------------
    M("sources-m-mismatch", BASE, "if m != m_y:", "if m > m_y:", "!= vs >: more labels than samples accepted"),
    M("sources-no-samples", BASE, "if m == 0:", "if m < 0:", "skipped check: m = 0"),
    M("sources-no-label-rows", BASE, "if n_x == 0 or k == 0:", "if n_x == 0:", "skipped check: k = 0"),
    M("sources-transposed-hint", BASE, "if n_x == m_y:", "if n_x == m:", "swapped args"),
    M("sources-complex", BASE, 'kind not in "biuf"', 'kind not in "biufc"', "complex data accepted"),
    M("sources-bounds", BASE, "(s, min(s + chunk, m))", "(s, s + chunk)", "skipped clamp: last chunk past m"),
    M(
        "sources-labels-unchecked",
        BASE,
        "X, Y = self._read(start, stop, into)\n        if labels is not None:",
        "X, Y = self._read(start, stop, into)\n        if False:",
        "skipped check",
    ),
    M(
        "sources-fingerprint-chunk",
        BASE,
        "self.chunk_bounds[0][1] - self.chunk_bounds[0][0]",
        "self.chunk_bounds[-1][1] - self.chunk_bounds[-1][0]",
        "wrong chunk",
    ),
    M("sources-chunk-of", INTEGRITY, 'sample, side="right"', 'sample, side="left"', "off-by-one at chunk starts"),
    M("sources-default-chunk", BASE, "max(1024, (TARGET", "max(1, (TARGET", "floor of 1024 samples dropped"),
    M("labels-class-id-max", LABELS, "(self.classes > Y)", "(self.classes >= Y)", "> vs >=: id = classes"),
    M("labels-class-id-whole", LABELS, " & (np.floor(Y) == Y)", "", "skipped check: 1.5 as a class id"),
    M("labels-one-hot-empty", LABELS, "keepdims=True) != 1)", "keepdims=True) > 1)", "all-zero column accepted"),
    M("labels-binary", LABELS, "~((Y == 0) | (Y == 1))\n", "~((Y >= 0) & (Y <= 1))\n", "0.5 accepted"),
    M("labels-first-bad", LABELS, "np.argmax(bad.any(axis=0))", "np.argmax(bad.any(axis=1))", "wrong axis"),
    M("labels-chunk", LABELS, 'start + col, side="right"', 'start + col, side="left"', "off-by-one in the chunk named"),
    M("zarr-chunk-axis", ZARR, "(self.m, X.chunks[axis])", "(self.m, X.chunks[1 - axis])", "wrong axis"),
    M("zarr-missing-chunks", ZARR, "if n_missing == 0:", "if n_missing >= 0:", "skipped check"),
    M("hdf5-chunk-axis", HDF5, "X.chunks[axis] if X.chunks", "X.chunks[1 - axis] if X.chunks", "wrong axis"),
    M("hdf5-never-written", HDF5, "if ds.id.get_storage_size() == 0:", "if False:", "skipped check"),
    M("hdf5-missing-chunks", HDF5, "if n_written == n_expected:", "if True:", "skipped check"),
    # -- checkpoint -------------------------------------------------------------------------------
    M("checkpoint-no-fsync", CHECKPOINT, "os.fsync(f.fileno())", "f.fileno()", "issue 10 #21: fsync skipped"),
    M("checkpoint-no-dir-fsync", CHECKPOINT, "os.fsync(dir_fd)", "(dir_fd)", "directory fsync skipped"),
    M(
        "checkpoint-format-tag",
        CHECKPOINT,
        'isinstance(meta, dict) or meta.get("format") != format:',
        "isinstance(meta, dict):",
        "issue 10 #21: format tag not checked",
    ),
    M("checkpoint-newer", CHECKPOINT, "if version > VERSION:", "if version > VERSION + 1:", "off-by-one"),
    M(
        "checkpoint-pickle",
        CHECKPOINT,
        "arrays = {_key(info): _read_member(z, info, size, dtypes) for info in z.infolist()}",
        "arrays = dict(np.load(path, allow_pickle=True))",
        "issue 10 #15: pickles loaded (numpy's loader, headers unchecked)",
    ),
    M("checkpoint-reserved-key", CHECKPOINT, "if _META in params:", "if False:", "skipped check"),
    M("checkpoint-temp-left", CHECKPOINT, "os.unlink(tmp)", "os.path.exists(tmp)", "temp file left behind"),
    # -- compare ----------------------------------------------------------------------------------
    M("compare-fpc", COMPARE, "(m - B) / (m - 1) if", "(m - B) / m if", "issue 10 #19: (m − B)/m"),
    M("compare-fpc-one-sample", COMPARE, "if m > 1 else 0.0", "if m > 0 else 0.0", "> vs >=: m = 1 divides by 0"),
    M("compare-trace", COMPARE, "norm(grad_sum) ** 2 / m**2", "norm(grad_sum) ** 2 / m", "‖ḡ‖² over m, not m²"),
    M("compare-noise-scale", COMPARE, "_ratio(trace, g_norm**2)", "_ratio(trace, g_norm)", "‖∇J‖ for ‖∇J‖²"),
    M("compare-cosine", COMPARE, "norm(g) * g_norm", "norm(g)", "dropped term"),
    M("compare-error-sign", COMPARE, "g[k] - grad[k]", "g[k] + grad[k]", "sign"),
    M("compare-rms", COMPARE, "math.sqrt(float(np.mean(np.square(errors))))", "float(np.mean(errors))", "mean for rms"),
    M("compare-cosine-min", COMPARE, "float(np.min(cosines))", "float(np.max(cosines))", "max for min"),
    M("compare-whole-batches", COMPARE, "b.X.shape[1] == B)", "b.X.shape[1] <= B)", "short batch counted"),
    M("compare-epoch", COMPARE, "Cursor(config.seed, 0)", "Cursor(config.seed, 1)", "not training's first epoch"),
    M("compare-sizes-clamped", COMPARE, "{min(B, m) for B in", "{B for B in", "skipped clamp: B > m"),
    M("compare-suggest-round", COMPARE, "max(b_noise, 1.0)) + 0.5)", "max(b_noise, 1.0)))", "floor, not nearest"),
    M("compare-suggest-at-m", COMPARE, "or b_noise >= m:", "or b_noise > m:", ">= vs >"),
    M("compare-advice-below", COMPARE, "if ratio > 4:", "if ratio >= 4:", "> vs >="),
    M("compare-advice-above", COMPARE, "elif ratio < 0.25:", "elif ratio <= 0.25:", "< vs <="),
    M("compare-noisy", COMPARE, "measured > NOISY_ORDER * random", "measured > random", "dropped factor"),
    M("compare-noisy-at-m", COMPARE, "if m > B and random > 0", "if random > 0", "skipped check: B = m"),
    M("compare-trained-at-m", COMPARE, 'trained["batch_size"] < m', 'trained["batch_size"] <= m', "< vs <="),
    # -- train ------------------------------------------------------------------------------------
    M("train-steps-per-epoch", OPTIM, "-(-m // B) if", "m // B if", "issue 10 #18: m // B steps per epoch"),
    M("train-lr-per", OPTIM, 'if config.lr_per == "step"', 'if config.lr_per != "step"', "swapped per-step/epoch"),
    M(
        "train-batch-gt-m",
        TRAINING_DATA,
        "config.batch_size > training.m:",
        "config.batch_size >= training.m:",
        "> vs >=",
    ),
    M("train-record-loss", TRAIN, "sums.loss + loss * X.shape[1]", "sums.loss + loss", "unweighted mean of batches"),
    M("train-record-accuracy", TRAIN, "sums.correct + n_correct\n", "n_correct\n", "dropped term"),
    M(
        "train-epoch-cursor",
        TRAIN,
        "Cursor(config.seed, state.epoch - 1)",
        "Cursor(config.seed, state.epoch)",
        "off-by-one",
    ),
    M(
        "train-exact-at-end",
        TRAIN,
        "(state.epoch % every == 0 or state.epoch == config.epochs)",
        "(state.epoch % every == 0)",
        "dropped term",
    ),
    M("train-warm-start-model", TRAINING_DATA, "if warm.model.name != model.name:", "if False:", "skipped check"),
    M(
        "train-init-seed",
        TRAINING_DATA,
        "source.k, dtype, config.seed)",
        "source.k, dtype, 0)",
        "init ignores the seed",
    ),
    M(
        "train-l2",
        TRAIN,
        "state.params, X, Y, l2=config.l2,",
        "state.params, X, Y, l2=0.0,",
        "L2 dropped from mini-batch steps",
    ),
    M(
        "train-init-copy",
        TRAINING_DATA,
        "{k: np.array(v, dtype=dtype) for k, v in init.items()}",
        "{k: np.asarray(v, dtype=dtype) for k, v in init.items()}",
        "no copy of the warm start",
        equivalent="optimizers return new arrays and never update in place (test_optim checks it); the compiled "
        "small-batch path steps copies of its own (SmallBatches.own)",
    ),
    M("shards-deal", SHARDS, "return [np.sort(order[k::K])", "return [np.sort(order[k::K + 1])", "a chunk dealt twice"),
    M(
        "shards-average-weights",
        SHARDS,
        "(r.samples / total) * np.asarray",
        "(1 / len(done)) * np.asarray",
        "unweighted average of shards of unequal size",
    ),
    M("shards-error-retried", SHARDS, "return _Refused(e)", "raise", "issue 14: a DataError re-read by retries"),
    M(
        "shards-log-due",
        SHARDS,
        "opt.step % task.log_every == 0",
        "steps % task.log_every == 0",
        "steps logged by the round's count, not the run's",
    ),
    M(
        "shards-monitor-window",
        SHARDED_RUN,
        "window=math.ceil(steps.window / self.config.sync_every)",
        "window=steps.window",
        "issue 14: one loss a round in a window of steps: divergence unseen",
    ),
    M("shards-rounds-counted", SHARDED_RUN, "sums.rounds += 1", "sums.rounds = 1", "rounds of an epoch miscounted"),
    M(
        "view-chunk-starts",
        VIEW,
        'self.__dict__["chunk_starts"] = source.chunk_starts',
        'self.__dict__.pop("chunk_starts", None)',
        "issue 14: a view's chunk named by its own index",
    ),
]

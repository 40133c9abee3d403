"""Greedy decoding and beam search over the translation `Transformer`'s cached decoder.

    ids = greedy_decode(model, inputs)                         # [b, L] int32
    ids, scores = beam_search(model, inputs, beam_size=4, alpha=0.6)
    translate = make_translate_fn(model, beam_size=4, alpha=0.6)  # a tf.function
    ids = translate(inputs)

`inputs` are source ids `[b, s]` (EOS-terminated, PAD after). Decoded ids come
back without BOS, with EOS when one was produced and PAD after it (PAD and BOS
are never chosen as output tokens); their width `L` is that of the longest one,
at most `max_decode_length` (by default the source width + 50, capped at the
model's `max_length`). Decoding stops early once no result can change any more.

The encoder runs once per batch and each step feeds one token through
`model.decode_step`, whose self-attention key/value cache holds just the prefix
decoded so far (a step costs in proportion to the prefix, not to the length
limit), inside a `tf.while_loop` that declares the caches' growing axis, so
everything here works eagerly and inside `tf.function`. `greedy_decode_uncached` is the textbook baseline that
re-runs the decoder over the whole prefix at every step.

Beam search ranks hypotheses by the GNMT score `log P(y | x) / lp(|y|)` with
`lp(n) = ((5 + n) / 6) ** alpha` (Wu et al. 2016), where `|y|` counts the EOS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from pipeline import features
from trainer.model import Transformer, shift_right

DEFAULT_EXTRA_LENGTH = 50

# Log-probability of impossible hypotheses: finite, so sums and divisions stay NaN-free.
_IMPOSSIBLE = -1e9

# Never valid output tokens: PAD marks the end of a decoded sequence and BOS only starts one.
_NEVER_EMITTED = (features.PAD_ID, features.BOS_ID)


def default_max_decode_length(
    source_lengths: int | tf.Tensor, *, model_max_length: int, extra: int = DEFAULT_EXTRA_LENGTH
) -> int | tf.Tensor:
    """`min(source_lengths + extra, model_max_length)`: a Python int for an int, else int32."""
    if isinstance(source_lengths, int):
        return min(source_lengths + extra, model_max_length)
    return tf.minimum(tf.cast(source_lengths, tf.int32) + extra, model_max_length)


def length_penalty(lengths: Any, alpha: float) -> tf.Tensor:
    """GNMT length penalty `((5 + lengths) / 6) ** alpha`, float32, shaped like `lengths`."""
    return tf.pow((5.0 + tf.cast(lengths, tf.float32)) / 6.0, alpha)


def greedy_decode(
    model: Transformer, inputs: tf.Tensor, *, max_decode_length: int | None = None
) -> tf.Tensor:
    """Greedy decoding with the key/value cache: `inputs [b, s]` -> ids `[b, L]` int32."""
    inputs = _as_ids(inputs)
    max_len = _max_decode_length(model, inputs, max_decode_length)
    memory, memory_mask = model.encode(inputs)
    cache = model.init_cache(memory, memory_mask, max_len)

    def next_logits(ids, last_ids, step, cache):
        del ids  # the cache holds everything the prefix contributes
        return model.decode_step(last_ids, step, cache)

    return _greedy_loop(
        next_logits, tf.shape(inputs)[0], max_len, cache, cache_shape_invariants(cache)
    )


def greedy_decode_uncached(
    model: Transformer, inputs: tf.Tensor, *, max_decode_length: int | None = None
) -> tf.Tensor:
    """Like `greedy_decode`, but every step re-runs `model.decode` over the whole prefix."""
    inputs = _as_ids(inputs)
    max_len = _max_decode_length(model, inputs, max_decode_length)
    memory, memory_mask = model.encode(inputs)
    batch_size = tf.shape(inputs)[0]
    bos = tf.fill([batch_size, 1], features.BOS_ID)

    def next_logits(ids, last_ids, step, state):
        del last_ids
        prefix = tf.concat([bos, ids[:, :step]], axis=1)
        return model.decode(prefix, memory, memory_mask)[:, -1, :], state

    return _greedy_loop(next_logits, batch_size, max_len, (), ())


def _greedy_loop(next_logits: Callable, batch_size, max_len, state, state_invariants) -> tf.Tensor:
    """Runs `next_logits(ids, last_ids, step, state) -> (logits [b, v], state)` greedily.

    `state_invariants` are the `tf.while_loop` shape invariants of `state`.
    """
    positions = tf.range(max_len)

    def not_done(step, last_ids, ids, finished, state):
        return tf.logical_and(step < max_len, tf.logical_not(tf.reduce_all(finished)))

    def extend(step, last_ids, ids, finished, state):
        logits, state = next_logits(ids, last_ids, step, state)
        next_ids = tf.argmax(_forbid_never_emitted(logits), axis=-1, output_type=tf.int32)
        next_ids = tf.where(finished, features.PAD_ID, next_ids)
        ids = tf.where(tf.equal(positions, step)[None, :], next_ids[:, None], ids)
        finished = tf.logical_or(finished, tf.equal(next_ids, features.EOS_ID))
        return step + 1, next_ids, ids, finished, state

    initial = (
        tf.constant(0),
        tf.fill([batch_size], features.BOS_ID),
        tf.fill([batch_size, max_len], features.PAD_ID),
        tf.zeros([batch_size], tf.bool),
        state,
    )
    invariants = (*(t.shape for t in initial[:4]), state_invariants)
    steps, _, ids, _, _ = tf.while_loop(not_done, extend, initial, shape_invariants=invariants)
    return ids[:, :steps]


def beam_search(
    model: Transformer,
    inputs: tf.Tensor,
    *,
    beam_size: int = 4,
    alpha: float = 0.6,
    max_decode_length: int | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Beam search: `inputs [b, s]` -> (best ids `[b, L]` int32, their GNMT scores `[b]` float32).

    Keeps `beam_size` alive hypotheses (no EOS yet) and the `beam_size` best
    finished ones per batch item. Each step expands every alive beam and takes
    the top `2 * beam_size` candidates, enough that `beam_size` of them lack EOS
    (each beam contributes at most one EOS). The search stops at
    `max_decode_length`, or once no alive beam of any batch item can beat that
    item's best finished score. Returns the best finished hypothesis, or the best
    alive one (scored at the full length) for items where nothing finished.
    """
    _check_beam_args(beam_size, alpha)
    inputs = _as_ids(inputs)
    max_len = _max_decode_length(model, inputs, max_decode_length)
    vocab_size = model.model_config.vocab_size
    beam = beam_size
    memory, memory_mask = model.encode(inputs)
    cache = model.init_cache(memory, memory_mask, max_len)
    # Batch item i's beams are rows i * beam ... i * beam + beam - 1 of the cache.
    cache = tf.nest.map_structure(lambda t: tf.repeat(t, beam, axis=0), cache)
    batch_size = tf.shape(inputs)[0]
    cache_row_offsets = tf.range(batch_size)[:, None] * beam
    positions = tf.range(max_len)
    best_possible_lp = length_penalty(max_len, alpha)

    def not_done(state):
        # Log-probs only fall as a hypothesis grows and lp peaks at max_len, so
        # no descendant of an alive beam can score above this.
        alive_bound = tf.reduce_max(state["alive_log_probs"], axis=1) / best_possible_lp
        best_finished = tf.reduce_max(
            tf.where(state["finished_flags"], state["finished_scores"], _IMPOSSIBLE), axis=1
        )
        can_improve = tf.logical_or(
            tf.logical_not(tf.reduce_any(state["finished_flags"], axis=1)),
            alive_bound > best_finished,
        )
        return tf.logical_and(state["step"] < max_len, tf.reduce_any(can_improve))

    def extend(state):
        step = state["step"]
        logits, cache = model.decode_step(
            tf.reshape(state["alive_last"], [-1]), step, state["cache"]
        )
        # Forbidden after the softmax, so scores stay the model's own log-probabilities.
        log_probs = _forbid_never_emitted(tf.nn.log_softmax(logits))
        log_probs = tf.reshape(log_probs, [-1, beam, vocab_size])
        candidates = state["alive_log_probs"][:, :, None] + log_probs
        top_log_probs, top_indices = tf.math.top_k(
            tf.reshape(candidates, [-1, beam * vocab_size]), k=2 * beam
        )
        top_origins = top_indices // vocab_size  # [b, 2 * beam] beam each candidate extends
        top_tokens = top_indices % vocab_size
        top_seqs = tf.gather(state["alive_seq"], top_origins, batch_dims=1)
        top_seqs = tf.where(
            tf.equal(positions, step)[None, None, :], top_tokens[:, :, None], top_seqs
        )
        top_ends = tf.equal(top_tokens, features.EOS_ID)

        alive_log_probs, keep = tf.math.top_k(
            tf.where(top_ends, _IMPOSSIBLE, top_log_probs), k=beam
        )
        cache_rows = tf.gather(top_origins, keep, batch_dims=1) + cache_row_offsets
        cache = _reorder_self_attention(cache, tf.reshape(cache_rows, [-1]))

        # Candidates extending an impossible beam (only when vocab < 2 * beam) never count.
        newly_finished = tf.logical_and(top_ends, top_log_probs > _IMPOSSIBLE / 2)
        new_scores = tf.where(
            newly_finished, top_log_probs / length_penalty(step + 1, alpha), _IMPOSSIBLE
        )
        finished_scores, pick = tf.math.top_k(
            tf.concat([state["finished_scores"], new_scores], axis=1), k=beam
        )
        finished_seqs = tf.concat([state["finished_seq"], top_seqs], axis=1)
        finished_flags = tf.concat([state["finished_flags"], newly_finished], axis=1)
        new_state = {
            "step": step + 1,
            "alive_seq": tf.gather(top_seqs, keep, batch_dims=1),
            "alive_last": tf.gather(top_tokens, keep, batch_dims=1),
            "alive_log_probs": alive_log_probs,
            "finished_seq": tf.gather(finished_seqs, pick, batch_dims=1),
            "finished_scores": finished_scores,
            "finished_flags": tf.gather(finished_flags, pick, batch_dims=1),
            "cache": cache,
        }
        return (new_state,)

    # Only the first beam is live at the start, so step 0 expands one copy of BOS.
    first_beam_only = tf.constant([[0.0] + [_IMPOSSIBLE] * (beam - 1)], tf.float32)
    initial = {
        "step": tf.constant(0),
        "alive_seq": tf.fill([batch_size, beam, max_len], features.PAD_ID),
        "alive_last": tf.fill([batch_size, beam], features.BOS_ID),
        "alive_log_probs": tf.tile(first_beam_only, [batch_size, 1]),
        "finished_seq": tf.fill([batch_size, beam, max_len], features.PAD_ID),
        "finished_scores": tf.fill([batch_size, beam], tf.constant(_IMPOSSIBLE, tf.float32)),
        "finished_flags": tf.zeros([batch_size, beam], tf.bool),
        "cache": cache,
    }
    invariants = {name: t.shape for name, t in initial.items() if name != "cache"}
    invariants["cache"] = cache_shape_invariants(cache)
    (final,) = tf.while_loop(not_done, extend, (initial,), shape_invariants=(invariants,))

    steps = final["step"]
    any_finished = tf.reduce_any(final["finished_flags"], axis=1)
    # Sorted by top_k, so index 0 is the best finished (or alive) hypothesis.
    best_ids = tf.where(
        any_finished[:, None], final["finished_seq"][:, 0], final["alive_seq"][:, 0]
    )
    best_scores = tf.where(
        any_finished,
        final["finished_scores"][:, 0],
        final["alive_log_probs"][:, 0] / length_penalty(steps, alpha),
    )
    # Beams that ran longer may have lost: keep only the columns the winners use.
    longest = tf.reduce_max(
        tf.reduce_sum(tf.cast(tf.not_equal(best_ids, features.PAD_ID), tf.int32), axis=1)
    )
    return best_ids[:, :longest], best_scores


def cache_shape_invariants(cache: dict) -> dict:
    """`tf.while_loop` shape invariants for a decoding cache (layout: `Transformer.init_cache`).

    Self-attention keys/values grow by one position (axis 2) per step; the
    rest keeps its shape.
    """

    def growing(t):
        return tf.TensorShape([t.shape[0], t.shape[1], None, t.shape[3]])

    return {
        "memory_mask": tf.TensorShape(cache["memory_mask"].shape),
        "layers": [
            {
                "self": {name: growing(t) for name, t in layer["self"].items()},
                "cross": {name: tf.TensorShape(t.shape) for name, t in layer["cross"].items()},
            }
            for layer in cache["layers"]
        ],
    }


def _reorder_self_attention(cache: dict, rows: tf.Tensor) -> dict:
    """The cache with each row's self-attention keys/values taken from row `rows[i]`.

    Rows only ever move among the beams of one batch item, whose cross-attention
    keys/values and memory mask are identical copies: those stay where they are,
    which saves copying them at every step.
    """
    return {
        **cache,
        "layers": [
            {
                **layer,
                "self": {name: tf.gather(t, rows, axis=0) for name, t in layer["self"].items()},
            }
            for layer in cache["layers"]
        ],
    }


def sequence_log_prob(model: Transformer, inputs: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
    """Teacher-forced `log P(outputs | inputs)`, `[b]` float32.

    `outputs [b, t]` are decoded ids as the functions above return them (no BOS,
    EOS-terminated or cut at the maximum length, PAD after); PAD is not scored.
    """
    inputs, outputs = _as_ids(inputs), _as_ids(outputs)
    logits = model((inputs, shift_right(outputs)), training=False)
    token_log_probs = tf.gather(tf.nn.log_softmax(logits), outputs, batch_dims=2)
    scored = tf.not_equal(outputs, features.PAD_ID)
    return tf.reduce_sum(tf.where(scored, token_log_probs, 0.0), axis=1)


def make_translate_fn(
    model: Transformer, *, beam_size: int, alpha: float, max_decode_length: int | None = None
) -> Callable[[tf.Tensor], tf.Tensor]:
    """A `tf.function` mapping source ids `[b, s]` to decoded ids `[b, L]` int32.

    Greedy for `beam_size == 1` (where `alpha` is unused), beam search otherwise.
    Batch size and source width may vary between calls (`reduce_retracing`).
    """
    _check_beam_args(beam_size, alpha)
    if max_decode_length is not None:
        _check_max_decode_length(model, max_decode_length)

    def translate(inputs: tf.Tensor) -> tf.Tensor:
        if beam_size == 1:
            return greedy_decode(model, inputs, max_decode_length=max_decode_length)
        ids, _ = beam_search(
            model, inputs, beam_size=beam_size, alpha=alpha, max_decode_length=max_decode_length
        )
        return ids

    return tf.function(translate, reduce_retracing=True)


def _forbid_never_emitted(scores: tf.Tensor) -> tf.Tensor:
    """Sets the `_NEVER_EMITTED` columns of `scores [b, vocab]` to `_IMPOSSIBLE`."""
    never = tf.reduce_any(
        tf.equal(tf.range(tf.shape(scores)[-1])[:, None], list(_NEVER_EMITTED)), axis=1
    )
    return tf.where(never, tf.constant(_IMPOSSIBLE, scores.dtype), scores)


def _as_ids(ids) -> tf.Tensor:
    ids = tf.convert_to_tensor(ids)
    return ids if ids.dtype == tf.int32 else tf.cast(ids, tf.int32)


def _check_beam_args(beam_size: int, alpha: float) -> None:
    if not isinstance(beam_size, int) or isinstance(beam_size, bool) or beam_size < 1:
        raise ValueError(f"beam_size must be a positive int, got {beam_size!r}")
    # The early stop assumes the length penalty never shrinks as hypotheses grow.
    if not alpha >= 0.0:
        raise ValueError(f"alpha (length penalty exponent) must be >= 0, got {alpha!r}")


def _check_max_decode_length(model: Transformer, max_decode_length: int) -> None:
    model_max = model.model_config.max_length
    if not isinstance(max_decode_length, int) or isinstance(max_decode_length, bool):
        raise ValueError(f"max_decode_length must be an int, got {max_decode_length!r}")
    if not 1 <= max_decode_length <= model_max:
        raise ValueError(
            f"max_decode_length={max_decode_length} must be in [1, {model_max}] "
            f"(the model's max_length)"
        )


def _max_decode_length(model: Transformer, inputs: tf.Tensor, max_decode_length: int | None):
    """The given limit, checked, or the default from the source width (a tensor if unknown)."""
    if max_decode_length is not None:
        _check_max_decode_length(model, max_decode_length)
        return max_decode_length
    width = inputs.shape[1]
    return default_max_decode_length(
        tf.shape(inputs)[1] if width is None else width,
        model_max_length=model.model_config.max_length,
    )

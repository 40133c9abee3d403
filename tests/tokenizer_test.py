"""Tier 1: training, loading and round-tripping the SentencePiece tokenizer."""

import pytest

from pipeline import features, tokenizer

SENTENCES = [
    f"{a} {n} {v} the {o}."
    for a in ("The", "A", "One")
    for n in ("dog", "cat", "girl", "man")
    for v in ("sees", "likes", "follows")
    for o in ("ball", "park", "street", "bird")
] + ["Der Hund sieht den Ball.", "Die Katze mag die Straße.", "Ein Mädchen folgt dem Vogel."] * 5


@pytest.fixture(scope="module")
def model_bytes():
    return tokenizer.train(SENTENCES, vocab_size=400)


def test_special_ids_follow_the_contract(model_bytes):
    tok = tokenizer.Tokenizer(model_bytes)
    assert tok.encode("")[-1] == features.EOS_ID
    assert tok.encode("The dog sees the ball.", add_eos=False)[-1] != features.EOS_ID
    assert features.PAD_ID not in tok.encode("The dog sees the ball.")


def test_round_trip_including_unseen_characters(model_bytes):
    tok = tokenizer.Tokenizer(model_bytes)
    for sentence in ["The girl follows the bird.", "Die Straße ist grün: 42 €, 東京!"]:
        ids = tok.encode(sentence)
        assert features.UNK_ID not in ids  # byte fallback: nothing is unknown
        assert tok.decode(ids) == sentence


def test_decode_stops_at_eos_and_skips_pad(model_bytes):
    tok = tokenizer.Tokenizer(model_bytes)
    ids = tok.encode("The cat likes the park.")
    assert (
        tok.decode([features.BOS_ID] + ids + [55, 66] + [features.PAD_ID] * 3)
        == "The cat likes the park."
    )


def test_training_is_deterministic(model_bytes):
    assert tokenizer.train(SENTENCES, vocab_size=400) == model_bytes


def test_training_with_any_number_of_threads_is_deterministic():
    for threads in (1, 3):
        runs = {tokenizer.train(SENTENCES, vocab_size=400, num_threads=threads) for _ in range(3)}
        assert len(runs) == 1, threads


def test_batch_encoding_equals_single(model_bytes):
    tok = tokenizer.Tokenizer(model_bytes)
    assert tok.encode_batch(SENTENCES[:5]) == [tok.encode(s) for s in SENTENCES[:5]]


def test_pickles_by_model_bytes(model_bytes):
    import pickle

    tok = pickle.loads(pickle.dumps(tokenizer.Tokenizer(model_bytes)))
    assert tok.sha256 == features.sha256_bytes(model_bytes)


def test_refuses_garbage_and_small_vocab():
    with pytest.raises(tokenizer.TokenizerError, match="not a SentencePiece model"):
        tokenizer.Tokenizer(b"not a model")
    with pytest.raises(tokenizer.TokenizerError, match="below the minimum"):
        tokenizer.train(SENTENCES, vocab_size=100)

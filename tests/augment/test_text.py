"""EDA text ops: invariants checked word by word, reproducibility and errors."""

from collections import Counter

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_regkit import augment as A

KEY = tf.constant([4, 9], tf.int64)
TEXTS = ["the big dog said hello to the small cat near the old house",
         "a good man", "one", "", "people think the new plan is good"]
SYN = {"big": ["large"], "small": ["tiny"], "good": ["fine"], "dog": ["hound"]}


def words(batch):
    return [t.decode().split() for t in batch.numpy()]


def test_swap_is_a_permutation_with_at_most_2n_moves():
    out = words(A.RandomSwap(alpha=0.2).augment(tf.constant(TEXTS), None, KEY)[0])
    for src, new in zip(TEXTS, out):
        src = src.split()
        assert Counter(src) == Counter(new)
        n = max(1, int(0.2 * len(src))) if src else 0
        assert sum(a != b for a, b in zip(src, new)) <= 2 * n


def test_deletion_keeps_an_ordered_subsequence_and_one_word():
    op = A.RandomDeletion(rate=0.5)
    texts = TEXTS * 20
    out = words(op.augment(tf.constant(texts), None, KEY)[0])
    kept = total = 0
    for src, new in zip(texts, out):
        src = src.split()
        it = iter(src)
        assert all(w in it for w in new)  # subsequence, order preserved
        assert (len(new) >= 1) == (len(src) >= 1)
        kept, total = kept + len(new), total + len(src)
    assert 0.4 < kept / total < 0.65
    all_gone = words(A.RandomDeletion(rate=1.0).augment(tf.constant(TEXTS), None, KEY)[0])
    assert [len(w) for w in all_gone] == [1, 1, 1, 0, 1]


def test_synonym_replacement_uses_the_table():
    out = words(A.SynonymReplacement(alpha=0.3, synonyms=SYN).augment(
        tf.constant(TEXTS), None, KEY)[0])
    for src, new in zip(TEXTS, out):
        src = src.split()
        assert len(src) == len(new)
        changed = [(a, b) for a, b in zip(src, new) if a != b]
        assert all(b in SYN[a] for a, b in changed)
        cands = sum(w in SYN for w in src)
        assert len(changed) == min(cands, max(1, int(0.3 * len(src))) if src else 0)


def test_random_insertion_inserts_synonyms():
    out = words(A.RandomInsertion(alpha=0.2, synonyms=SYN).augment(
        tf.constant(TEXTS), None, KEY)[0])
    for src, new in zip(TEXTS, out):
        src = src.split()
        cands = [w for w in src if w in SYN]
        n = max(1, int(0.2 * len(src))) if cands else 0
        assert len(new) == len(src) + n
        extra = Counter(new) - Counter(src)
        assert all(any(w in SYN[c] for c in SYN) for w in extra.elements())


def test_sentence_shuffle_permutes_sentences():
    text = "One a. Two b! Three c? Four d."
    out = A.SentenceShuffle().augment(tf.constant([text] * 8), None, KEY)[0].numpy()
    parts = [sorted(o.decode().replace(". ", ".|").replace("! ", "!|").replace("? ", "?|")
                    .split("|")) for o in out]
    assert all(p == sorted(["One a.", "Two b!", "Three c?", "Four d."]) for p in parts)
    assert len({o for o in out}) > 1


def test_eda_copies_and_labels():
    op = A.EDA(n_aug=6, synonyms=SYN)
    out, labels = op.augment(tf.constant(TEXTS[:2]), tf.constant([3, 7]), KEY)
    out = out.numpy()
    assert out.shape == (14,) and out[0].decode() == TEXTS[0] and out[7].decode() == TEXTS[1]
    np.testing.assert_array_equal(labels.numpy(), [3] * 7 + [7] * 7)
    # copy c uses technique c % 4: copy 3 (0-based 2) is a swap -> same multiset of words
    assert Counter(out[3].decode().split()) == Counter(TEXTS[0].split())


def test_text_pipeline_reproducible():
    ds = tf.data.Dataset.from_tensor_slices(TEXTS * 4).batch(4)
    pl = lambda: A.Pipeline([A.RandomSwap(0.3), A.RandomDeletion(0.2)], seed=1)  # noqa: E731
    a = pl()(ds)
    e1 = [b.numpy().tolist() for b in a]
    e2 = [b.numpy().tolist() for b in a]
    e3 = [b.numpy().tolist() for b in pl()(ds, num_parallel_calls=1)]
    assert e1 == e3 and e1 != e2


def test_text_errors_and_serialization():
    with pytest.raises(ValueError, match="SynonymReplacement: synonyms must be a non-empty dict"):
        A.SynonymReplacement(synonyms={})
    with pytest.raises(TypeError, match="RandomInsertion: synonyms must be a dict"):
        A.RandomInsertion(synonyms=["a", "b"])
    with pytest.raises(ValueError, match=r"RandomSwap: alpha must be in \[0, 1\], got 2"):
        A.RandomSwap(alpha=2)
    with pytest.raises(ValueError, match="Pipeline: ops must be all image ops or all text ops"):
        A.Pipeline([A.RandomSwap(), A.RandomFlip()])
    with pytest.raises(TypeError, match="Pipeline: texts must be a tf.string batch"):
        A.Pipeline([A.RandomSwap()])(tf.data.Dataset.from_tensors(tf.zeros([3])))
    for op in [A.RandomSwap(0.2, p=0.5), A.RandomDeletion(0.3), A.SentenceShuffle(0.5),
               A.SynonymReplacement(0.2, SYN), A.RandomInsertion(0.1), A.EDA(n_aug=4)]:
        clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(op))
        assert clone == op

"""EDA text augmentation on ``tf.string`` batches, in the graph (no Python callbacks).

Sentences are split on whitespace into a dense (batch, length) token matrix; each op works on the
whole matrix at once with per-sentence random draws (positions from stateless uniforms, edits as
``where`` over position ``iota``), then joins the tokens back with single spaces.

Reference: Wei & Zou, "EDA: Easy Data Augmentation Techniques for Boosting Performance on Text
Classification Tasks", EMNLP 2019. The number of edits of a sentence of ``l`` words is
``max(1, int(alpha * l))``; random deletion drops each word with probability ``p`` and keeps one
random word when all would go.
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

import tensorflow as tf

from keras_regkit._validation import check_int, check_range
from keras_regkit.augment.base import TEXT, AugmentOp, coin, fold, randint, serializable, spec_error
from keras_regkit.augment.base import uniform

# A small built-in English table so that demos work offline (hand-written, symmetric in spirit).
ENGLISH_SYNONYMS: dict[str, list[str]] = {
    "big": ["large", "huge", "great"], "large": ["big", "huge"], "small": ["little", "tiny"],
    "little": ["small", "tiny"], "good": ["fine", "great", "decent"], "bad": ["poor", "awful"],
    "new": ["fresh", "recent"], "old": ["former", "aged"], "high": ["tall", "elevated"],
    "low": ["reduced", "modest"], "fast": ["quick", "rapid"], "quick": ["fast", "rapid"],
    "said": ["stated", "told", "reported"], "says": ["states", "reports"],
    "told": ["informed", "said"], "make": ["create", "produce"], "made": ["created", "produced"],
    "get": ["obtain", "receive"], "help": ["aid", "assist"], "show": ["display", "reveal"],
    "start": ["begin", "commence"], "began": ["started", "commenced"], "end": ["finish", "close"],
    "use": ["employ", "apply"], "used": ["employed", "applied"], "people": ["persons", "folk"],
    "man": ["person", "individual"], "men": ["people", "persons"], "government": ["administration"],
    "country": ["nation", "state"], "world": ["globe", "earth"], "city": ["town", "municipality"],
    "police": ["officers", "authorities"], "attack": ["assault", "strike"],
    "attacks": ["assaults", "strikes"], "killed": ["slain", "murdered"], "died": ["perished"],
    "fire": ["blaze", "flames"], "fires": ["blazes"], "area": ["region", "zone"],
    "areas": ["regions", "zones"], "leader": ["chief", "head"], "group": ["team", "band"],
    "official": ["officer", "functionary"], "officials": ["officers", "authorities"],
    "week": ["seven days"], "year": ["twelvemonth"], "today": ["this day"], "important": ["key",
    "significant", "crucial"], "major": ["main", "chief", "key"], "early": ["initial", "first"],
    "strong": ["powerful", "sturdy"], "hard": ["difficult", "tough"], "around": ["about"],
    "near": ["close to", "beside"], "many": ["numerous", "several"], "several": ["various"],
    "think": ["believe", "reckon"], "believe": ["think", "trust"],
    "want": ["wish", "desire"], "need": ["require"], "try": ["attempt"], "found": ["discovered"],
    "move": ["shift", "relocate"], "plan": ["scheme", "proposal"], "talks": ["negotiations"],
    "security": ["safety", "protection"], "forces": ["troops", "units"], "troops": ["soldiers"],
    "children": ["kids", "youngsters"], "house": ["home", "residence"], "car": ["vehicle", "auto"],
    "film": ["movie", "picture"], "movie": ["film", "picture"], "happy": ["glad", "cheerful"],
    "sad": ["unhappy", "gloomy"], "great": ["excellent", "superb"], "terrible": ["awful", "dreadful"],
}


def split_sentences_py(text: str) -> list[str]:
    """Splits a corpus into sentences on ``.``, ``!`` or ``?`` followed by whitespace (plain Python)."""
    parts = re.split(r"(?<=[.!?])\s+", text.replace("\n", " "))
    return [p.strip() for p in parts if len(p.split()) >= 2]


def to_tokens(texts):
    """Whitespace tokens as a dense (batch, length) string matrix and the per-row lengths."""
    words = tf.strings.split(texts)
    return words.to_tensor(default_value=""), tf.cast(words.row_lengths(), tf.int32)


def join_tokens(tokens, keep):
    """Joins the kept tokens of each row with single spaces."""
    return tf.strings.reduce_join(tf.ragged.boolean_mask(tokens, keep), axis=1, separator=" ")


def n_edits(alpha: float, lengths):
    """EDA's number of edits, ``max(1, int(alpha * l))`` (0 for empty sentences)."""
    n = tf.maximum(1, tf.cast(alpha * tf.cast(lengths, tf.float32), tf.int32))
    return tf.where(lengths > 0, n, 0)


class _TextOp(AugmentOp):
    kind = TEXT

    def output_spec(self, images, labels):
        if images.dtype != tf.string or images.shape.rank != 1:
            spec_error(self.owner, "texts", "a tf.string batch of shape (batch,)",
                       f"{images.dtype.name} of shape {images.shape}")
        return images, labels

    def augment(self, texts, labels, key):
        out = self.edit(texts, fold(key, 1))
        return tf.where(coin(fold(key, 0), tf.shape(texts)[0], self.p), out, texts), labels

    def edit(self, texts, key):
        raise NotImplementedError


def _loop(n, body, state):
    """Runs ``state = body(k, state)`` for ``k < max(n)`` in the graph."""
    steps = tf.reduce_max(tf.concat([n, [0]], 0))
    _, state = tf.while_loop(lambda k, s: k < steps, lambda k, s: (k + 1, body(k, s)),
                             (tf.constant(0), state))
    return state


@serializable
class RandomSwap(_TextOp):
    """Swaps two random words of each sentence, ``max(1, int(alpha * l))`` times.

    Args:
        alpha: fraction of the words swapped, in [0, 1].
        p: probability of augmenting a sentence.
    """

    def __init__(self, alpha: float = 0.1, p: float = 1.0):
        super().__init__(p)
        self.alpha = check_range(self.owner, "alpha", alpha, 0.0, 1.0)

    def edit(self, texts, key):
        tokens, lengths = to_tokens(texts)
        n = n_edits(self.alpha, lengths)
        batch = tf.shape(tokens)[0]
        pos = tf.range(tf.shape(tokens)[1])[None, :]

        def body(k, idx):
            # Swaps act on an int32 index matrix; the strings are gathered once at the end.
            kk = fold(key, k)
            i = randint(fold(kk, 0), [batch], tf.maximum(lengths, 1))[:, None]
            j = randint(fold(kk, 1), [batch], tf.maximum(lengths, 1))[:, None]
            vi = tf.gather(idx, i, batch_dims=1)
            vj = tf.gather(idx, j, batch_dims=1)
            swapped = tf.where(pos == i, vj, tf.where(pos == j, vi, idx))
            return tf.where((k < n)[:, None], swapped, idx)

        # idx[b, t] is the position whose word ends up at t: apply the swaps to positions.
        idx = _loop(n, body, tf.broadcast_to(pos, tf.shape(tokens)))
        tokens = tf.gather(tokens, idx, batch_dims=1)
        return join_tokens(tokens, pos < lengths[:, None])

    def get_config(self):
        return {"alpha": self.alpha, "p": self.p}


@serializable
class RandomDeletion(_TextOp):
    """Deletes each word with probability ``rate``; keeps one random word if all would go.

    Args:
        rate: deletion probability of each word, in [0, 1] (EDA's ``p_rd``).
        p: probability of augmenting a sentence.
    """

    def __init__(self, rate: float = 0.1, p: float = 1.0):
        super().__init__(p)
        self.rate = check_range(self.owner, "rate", rate, 0.0, 1.0)

    def edit(self, texts, key):
        tokens, lengths = to_tokens(texts)
        shape = tf.shape(tokens)
        pos = tf.range(shape[1])[None, :]
        valid = pos < lengths[:, None]
        keep = (uniform(fold(key, 0), shape) >= self.rate) & valid
        lone = randint(fold(key, 1), [shape[0]], tf.maximum(lengths, 1))[:, None]
        none_left = ~tf.reduce_any(keep, axis=1, keepdims=True)
        keep = tf.where(none_left, (pos == lone) & valid, keep)
        return join_tokens(tokens, keep)

    def get_config(self):
        return {"rate": self.rate, "p": self.p}


class _SynonymOp(_TextOp):
    """Holds a synonym table as a hash table (word -> row) and a ragged array of synonyms."""

    def __init__(self, alpha, synonyms, p):
        super().__init__(p)
        self.alpha = check_range(self.owner, "alpha", alpha, 0.0, 1.0)
        table = ENGLISH_SYNONYMS if synonyms is None else synonyms
        if not isinstance(table, Mapping):
            spec_error(self.owner, "synonyms", "a dict word -> list of synonyms",
                       type(table).__name__, TypeError)
        table = {str(w).lower(): [str(s) for s in syns] for w, syns in table.items()
                 if isinstance(syns, Sequence) and not isinstance(syns, str) and len(syns) > 0}
        if not table:
            spec_error(self.owner, "synonyms", "a non-empty dict word -> non-empty list of "
                       "synonyms", synonyms)
        self.synonyms = synonyms
        words = sorted(table)
        with tf.init_scope():
            self._table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(words), tf.range(len(words), dtype=tf.int32)), -1)
            self._values = tf.ragged.constant([table[w] for w in words])

    def lookup(self, tokens):
        """Row of each token in the table (-1 when it has no synonyms)."""
        return self._table.lookup(tf.strings.lower(tokens))

    def pick_synonym(self, rows, key):
        """A uniformly chosen synonym for each (valid) table row."""
        rows = tf.maximum(rows, 0)
        starts = tf.gather(self._values.row_splits, rows)
        counts = tf.gather(self._values.row_lengths(), rows)
        idx = starts + tf.cast(randint(key, tf.shape(rows), tf.maximum(counts, 1)), starts.dtype)
        return tf.gather(self._values.flat_values, idx)

    def get_config(self):
        return {"alpha": self.alpha, "synonyms": self.synonyms, "p": self.p}


@serializable
class SynonymReplacement(_SynonymOp):
    """Replaces ``max(1, int(alpha * l))`` distinct words that have synonyms with a random synonym.

    Args:
        alpha: fraction of the words replaced, in [0, 1] (EDA's ``alpha_sr``).
        synonyms: dict word -> list of synonyms (lower-case keys); ``None`` uses the small
            built-in ``ENGLISH_SYNONYMS`` table.
        p: probability of augmenting a sentence.
    """

    def __init__(self, alpha: float = 0.1, synonyms: Mapping | None = None, p: float = 1.0):
        super().__init__(alpha, synonyms, p)

    def edit(self, texts, key):
        tokens, lengths = to_tokens(texts)
        rows = self.lookup(tokens)
        pos = tf.range(tf.shape(tokens)[1])[None, :]
        has = (rows >= 0) & (pos < lengths[:, None])
        # Random priorities; a word's rank among the candidates decides whether it is replaced.
        prio = tf.where(has, uniform(fold(key, 0), tf.shape(tokens)), -1.0)
        rank = tf.argsort(tf.argsort(prio, axis=1, direction="DESCENDING"), axis=1)
        chosen = has & (rank < n_edits(self.alpha, lengths)[:, None])
        new = self.pick_synonym(rows, fold(key, 1))
        return join_tokens(tf.where(chosen, new, tokens), pos < lengths[:, None])


@serializable
class RandomInsertion(_SynonymOp):
    """Inserts, ``max(1, int(alpha * l))`` times, a synonym of a random word at a random position.

    Args:
        alpha: fraction of the length inserted, in [0, 1] (EDA's ``alpha_ri``).
        synonyms: dict word -> list of synonyms; ``None`` uses ``ENGLISH_SYNONYMS``.
        p: probability of augmenting a sentence.
    """

    def __init__(self, alpha: float = 0.1, synonyms: Mapping | None = None, p: float = 1.0):
        super().__init__(alpha, synonyms, p)

    def edit(self, texts, key):
        tokens, lengths = to_tokens(texts)
        n = n_edits(self.alpha, lengths)
        width = tf.shape(tokens)[1] + tf.reduce_max(tf.concat([n, [0]], 0))
        tokens = tf.pad(tokens, [[0, 0], [0, width - tf.shape(tokens)[1]]])
        batch = tf.shape(tokens)[0]
        pos = tf.range(width)[None, :]

        def body(k, state):
            tok, length = state
            kk = fold(key, k)
            rows = self.lookup(tok)
            has = (rows >= 0) & (pos < length[:, None])
            prio = tf.where(has, uniform(fold(kk, 0), tf.shape(tok)), -1.0)
            src = tf.argmax(prio, axis=1, output_type=tf.int32)[:, None]
            word = self.pick_synonym(tf.gather(rows, src, batch_dims=1), fold(kk, 1))
            at = randint(fold(kk, 2), [batch], length + 1)[:, None]
            shifted = tf.concat([tok[:, :1], tok[:, :-1]], axis=1)
            inserted = tf.where(pos < at, tok, tf.where(pos == at, word, shifted))
            act = (k < n) & tf.reduce_any(has, axis=1)
            return (tf.where(act[:, None], inserted, tok), length + tf.cast(act, tf.int32))

        tokens, lengths = _loop(n, body, (tokens, lengths))
        return join_tokens(tokens, pos < lengths[:, None])


@serializable
class SentenceShuffle(_TextOp):
    """Shuffles the order of the sentences (split after ``.``, ``!`` or ``?``) of each text.

    Args:
        p: probability of shuffling a text.
    """

    def __init__(self, p: float = 1.0):
        super().__init__(p)

    def edit(self, texts, key):
        marked = tf.strings.regex_replace(tf.strings.strip(texts), r"([.!?])\s+", "\\1\x1f")
        parts = tf.strings.split(marked, "\x1f")
        rows = tf.cast(parts.value_rowids(), tf.float32)
        order = tf.argsort(rows + 0.5 * uniform(key, tf.shape(rows)))
        shuffled = parts.with_flat_values(tf.gather(parts.flat_values, order))
        return tf.strings.reduce_join(shuffled, axis=1, separator=" ")

    def get_config(self):
        return {"p": self.p}


@serializable
class EDA(_TextOp):
    """Easy Data Augmentation: ``n_aug`` augmented copies of each sentence plus the original.

    Copy ``c`` (0-based) uses technique ``c % 4``: synonym replacement, random insertion, random
    swap, random deletion, so each technique makes about ``n_aug / 4`` copies as in the paper. The
    output batch holds, for each input sentence in order, the original then its ``n_aug`` copies;
    labels (if any) are repeated to match.

    Args:
        alpha_sr, alpha_ri, alpha_rs: fractions of words changed by synonym replacement, random
            insertion and random swap, in [0, 1] (the paper recommends 0.1).
        p_rd: per-word deletion probability, in [0, 1].
        n_aug: augmented copies per sentence, >= 1 (the paper uses 16 for small data sets, 4 for
            large ones).
        synonyms: dict word -> list of synonyms; ``None`` uses ``ENGLISH_SYNONYMS``.

    Reference: Wei & Zou, EMNLP 2019.
    """

    def __init__(self, alpha_sr: float = 0.1, alpha_ri: float = 0.1, alpha_rs: float = 0.1,
                 p_rd: float = 0.1, n_aug: int = 9, synonyms: Mapping | None = None):
        super().__init__(1.0)
        self.n_aug = check_int(self.owner, "n_aug", n_aug, 1)
        self.synonyms = synonyms
        self.techniques = [SynonymReplacement(alpha_sr, synonyms), RandomInsertion(alpha_ri, synonyms),
                           RandomSwap(alpha_rs), RandomDeletion(p_rd)]
        self.alpha_sr, self.alpha_ri, self.alpha_rs, self.p_rd = alpha_sr, alpha_ri, alpha_rs, p_rd

    def augment(self, texts, labels, key):
        copies = [texts[:, None]]
        for t, op in enumerate(self.techniques):
            count = len(range(t, self.n_aug, 4))
            if count:
                out = op.edit(tf.repeat(texts, count), fold(key, t))
                copies.append(tf.reshape(out, [-1, count]))
        # Reorder the copies so that copy c is technique c % 4 (interleaved), then flatten.
        stacked = tf.concat(copies, axis=1)
        order = [0] + [1 + self._slot(c) for c in range(self.n_aug)]
        out = tf.reshape(tf.gather(stacked, order, axis=1), [-1])
        if labels is not None:
            labels = tf.repeat(labels, self.n_aug + 1, axis=0)
        return out, labels

    def _slot(self, c):
        """Column of copy ``c`` in the technique-major layout."""
        t = c % 4
        return sum(len(range(s, self.n_aug, 4)) for s in range(t)) + c // 4

    def output_spec(self, images, labels):
        super().output_spec(images, labels)
        batch = None if images.shape[0] is None else images.shape[0] * (self.n_aug + 1)
        if labels is not None:
            labels = tf.TensorSpec([batch] + labels.shape.as_list()[1:], labels.dtype)
        return tf.TensorSpec([batch], tf.string), labels

    def get_config(self):
        return {"alpha_sr": self.alpha_sr, "alpha_ri": self.alpha_ri, "alpha_rs": self.alpha_rs,
                "p_rd": self.p_rd, "n_aug": self.n_aug, "synonyms": self.synonyms}

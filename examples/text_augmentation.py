"""EDA text augmentation on a real corpus, inside tf.data.

Shows ``keras_regkit.augment.EDA`` (Wei & Zou 2019: synonym replacement, random insertion, random
swap, random deletion) and ``SentenceShuffle`` running as a reproducible ``tf.data`` pipeline over the
sentences of gensim's Lee background corpus (shipped with gensim, offline). The synonym table is
the small built-in English one; pass your own dict to ``EDA(synonyms=...)``.

Expected output: a few original sentences each followed by their augmented copies, then a summary
line such as ``2581 sentences -> 12905 (n_aug=4) in 0.4 s, identical on replay: True``; files
``eda_lee.tsv`` (label, original/augmented sentence) and ``summary.json`` in ``--out``.

Run: ``python examples/text_augmentation.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

from keras_regkit import augment as A  # noqa: E402
from keras_regkit.augment.text import split_sentences_py  # noqa: E402


def lee_sentences() -> list[str]:
    from gensim.test.utils import datapath

    with open(datapath("lee_background.cor"), encoding="utf-8") as f:
        return split_sentences_py(f.read())


def main() -> None:
    parser = argparse.ArgumentParser(description="EDA on the gensim Lee corpus")
    parser.add_argument("--quick", action="store_true", help="first 400 sentences only")
    parser.add_argument("--out", default="text_augmentation_out", help="output folder")
    parser.add_argument("--n-aug", type=int, default=4, help="augmented copies per sentence")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    sentences = lee_sentences()
    if args.quick:
        sentences = sentences[:400]
    ids = list(range(len(sentences)))  # a "label" per sentence, to show that labels follow
    ds = tf.data.Dataset.from_tensor_slices((sentences, ids)).batch(128)
    pipeline = A.Pipeline([A.EDA(alpha_sr=0.1, alpha_ri=0.1, alpha_rs=0.1, p_rd=0.1,
                                 n_aug=args.n_aug)], seed=2019)

    start = time.perf_counter()
    rows = [(int(i), s.decode()) for texts, labels in pipeline(ds)
            for s, i in zip(texts.numpy(), labels.numpy())]
    seconds = time.perf_counter() - start
    replay = [(int(i), s.decode()) for texts, labels in
              A.Pipeline(pipeline.ops, seed=2019)(ds) for s, i in zip(texts.numpy(), labels.numpy())]

    per = args.n_aug + 1
    for k in range(3):
        print(f"original : {rows[k * per][1]}")
        for _, text in rows[k * per + 1:(k + 1) * per]:
            print(f"  eda    : {text}")
    with open(os.path.join(args.out, "eda_lee.tsv"), "w", encoding="utf-8") as f:
        f.writelines(f"{i}\t{t}\n" for i, t in rows)
    summary = {"sentences": len(sentences), "augmented": len(rows), "n_aug": args.n_aug,
               "seconds": round(seconds, 3), "identical_on_replay": rows == replay,
               "changed_fraction": sum(rows[j][1] != rows[j - j % per][1] for j in range(len(rows))
                                       if j % per) / (len(rows) - len(sentences))}
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"{len(sentences)} sentences -> {len(rows)} (n_aug={args.n_aug}) in {seconds:.1f} s, "
          f"identical on replay: {rows == replay}; "
          f"{100 * summary['changed_fraction']:.0f}% of the copies differ from their original")
    print(f"wrote {os.path.abspath(args.out)}")


if __name__ == "__main__":
    main()

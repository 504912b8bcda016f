"""``tf.data`` augmentation pipelines for images and text.

Image ops work on NHWC batches (uint8 or float in [0, 255]) with one set of random parameters per
example, and carry segmentation masks and bounding boxes (Keras 3 dicts) through every geometric
op; text ops work on ``tf.string`` batches. ``image_files`` reads JPEG/PNG class folders, and the
decode ops (``DecodeRandomResizedCrop``, ``DecodeCenterCrop``) decode only the crops they keep.
``Pipeline`` applies ops to a batched ``tf.data.Dataset`` reproducibly; ``AugmentationLayer`` runs
an image pipeline inside a model.
"""

from keras_regkit.augment.base import AugmentOp
from keras_regkit.augment.decode import DecodeCenterCrop, DecodeRandomResizedCrop
from keras_regkit.augment.files import image_files
from keras_regkit.augment.image import (
    Cutout,
    GaussianBlur,
    GaussianNoise,
    RandomAffine,
    RandomBrightness,
    RandomContrast,
    RandomCrop,
    RandomErasing,
    RandomFlip,
    RandomGrayscale,
    RandomHue,
    RandomResizedCrop,
    RandomSaturation,
)
from keras_regkit.augment.mixing import CutMix, LabelSmoothing, MixUp
from keras_regkit.augment.pipeline import AugmentationLayer, Pipeline
from keras_regkit.augment.policy import RandAugment
from keras_regkit.augment.preview import preview
from keras_regkit.augment.text import (
    EDA,
    ENGLISH_SYNONYMS,
    RandomDeletion,
    RandomInsertion,
    RandomSwap,
    SentenceShuffle,
    SynonymReplacement,
)

__all__ = [
    "AugmentOp",
    "AugmentationLayer",
    "CutMix",
    "EDA",
    "ENGLISH_SYNONYMS",
    "Cutout",
    "DecodeCenterCrop",
    "DecodeRandomResizedCrop",
    "GaussianBlur",
    "GaussianNoise",
    "LabelSmoothing",
    "MixUp",
    "Pipeline",
    "RandAugment",
    "RandomAffine",
    "RandomBrightness",
    "RandomContrast",
    "RandomCrop",
    "RandomDeletion",
    "RandomErasing",
    "RandomFlip",
    "RandomGrayscale",
    "RandomHue",
    "RandomInsertion",
    "RandomResizedCrop",
    "RandomSaturation",
    "RandomSwap",
    "SentenceShuffle",
    "SynonymReplacement",
    "image_files",
    "preview",
]

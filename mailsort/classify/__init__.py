"""Critical/routine classification: text features, model, training, evaluation, retraining.

Knows nothing of IMAP: it takes (subject, body) pairs or labelled examples and returns verdicts,
models and metrics. Heavy modules (training, plotting) are imported only when used: loading a
model and classifying need numpy and joblib, not scikit-learn or scipy (see `scorer`).
"""

from mailsort.classify.data import Example, load_examples, save_examples
from mailsort.classify.model import (
    Classifier,
    Verdict,
    default_model_path,
    load_classifier,
)

__all__ = [
    "Classifier",
    "Example",
    "Verdict",
    "default_model_path",
    "load_classifier",
    "load_examples",
    "save_examples",
]

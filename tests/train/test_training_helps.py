"""Training helps: on a non-saturated setting the trained network beats itself untrained.

Digits against synthetic anomalies or the full test set is nearly saturated (even random
features score high), so this uses digit 8 against held-out training images of the other
digits, where the untrained network's validation AUROC is about 0.74.
"""

from raysearch.config.registry import method_class
from raysearch.config.spec import load_spec
from raysearch.data import load_task
from raysearch.methods.base import DataInfo
from raysearch.train.loop import _evaluate_split, seed_everything, train_class

SETTING = [
    "data.classes=[8]",
    "selection.anomalies=other_classes",
    "selection.holdout=0.3",
    "train.epochs=6",
    "train.eval_every=6",
]


def test_trained_beats_untrained_on_validation(demo_spec_path):
    spec = load_spec(demo_spec_path, SETTING)
    method_cls = method_class(spec.method)
    task = load_task(spec.data, spec.selection, "8", spec.train.seed)

    seed_everything(spec.train.seed)  # the same initial weights train_class starts from
    info = DataInfo(channels=3, image_size=spec.data.image_size, num_train=len(task.train), has_masks=False)
    method = method_cls(spec.params, info, "cpu", seed=spec.train.seed)
    untrained = method.build()
    method.fit_scorer(untrained, task.train)
    before = _evaluate_split(method, untrained, task.val, "val_", 64)["val_image_auroc"]

    after = train_class(spec, task, method_cls).metrics["val_image_auroc"]
    assert before < 0.9  # the setting is not saturated
    assert after > before + 0.05, (before, after)

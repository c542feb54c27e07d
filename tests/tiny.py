"""The tiny run every end-to-end test uses: one digits class, two epochs, a few dozen images."""

TINY = [
    "data.classes=[3]",
    "data.max_train=48",
    "data.max_test=40",
    "train.epochs=2",
    "train.eval_every=1",
    "train.batch_size=16",
    "params.backbone.width=8",
]

"""`raysearch export` on a store built by hand (no Ray): what an exported spec records."""

import shutil

import yaml

from raysearch.config.spec import load_spec
from raysearch.store import results
from raysearch.store.results import RunInfo, base_row, config_schema


def test_exported_specs_mark_tuned_keys_and_keep_checkpoints_valid_in_a_copy(tmp_path):
    from analysis.export import export_best

    spec = load_spec("search_spaces/demo/distcon.yaml", ["data.classes=[3, 5]"])
    out = str(tmp_path / "exp")
    results.write_resolved_spec(spec, out)
    for n, (tid, auroc) in enumerate({"a": 0.8, "b": 0.9}.items()):
        run = RunInfo(experiment=spec.name, kind="tune", trial_id=tid, storage=out, optuna_trial=n)
        for ci, name in enumerate(["3", "5"]):
            ckpt = tmp_path / "exp" / "checkpoints" / tid / name / "best.pt"
            ckpt.parent.mkdir(parents=True)
            ckpt.write_bytes(b"weights")
            row = dict(base_row(spec, run), status="completed", normal_class=name, class_index=ci,
                       val_image_auroc=auroc, checkpoint=str(ckpt))
            results.write_rows(results.results_dir(out), config_schema(spec), [row], f"{tid}--{ci}")
    copy = tmp_path / "moved"
    shutil.copytree(out, copy)
    shutil.rmtree(out)
    [path] = export_best(str(copy), top=1, to=str(tmp_path / "best"))
    origin = yaml.safe_load(path.read_text())["provenance"]["exported_from"]
    assert origin["trial_id"] == "b" and origin["optuna_trial"] == 1
    assert origin["checkpoints"] == {"3": "checkpoints/b/3/best.pt", "5": "checkpoints/b/5/best.pt"}
    assert all((copy / p).read_bytes() == b"weights" for p in origin["checkpoints"].values())
    assert origin["tuned"] == sorted(spec.search["space"])
    assert "data_fingerprint" not in yaml.safe_load(path.read_text())["provenance"]

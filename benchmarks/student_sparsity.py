"""How much of each repro-small student's probed feature is zero, and how one-sided its targets
are (issue 14's reading: the CS-var / interpolation rows).

The linear probe and fine-tune read the student's pooled post-ReLU features. A student trained
to regress mostly negative pre-ReLU targets gives features that are mostly zero after the ReLU.
This measures both on the study's own artifacts:

    .venv/bin/python benchmarks/student_sparsity.py [STUDY_DIR] [OUT_JSON]

(defaults: repro-out/same-size, benchmarks/results/repro-same-size-sparsity.json).
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

from kdep_cache.cache import TARGETS, Store
from kdep_cache.transfer.classification.data import FolderDataset, open_downstream, test_transform
from kdep_cache.transfer.classification.linear import extract_features
from kdep_cache.transfer.students import resolve_student

ROWS = {"CS-var-s0": "targets-cs-var-none", "interpolation-s0": "targets-interp-none",
        "KDEP_SVDPTS-s0": "targets-svd-pts", "SVD_no_transform-s0": "targets-svd-none",
        "1x1_conv-s0": None, "random:resnet18": None}


def targets_sidedness(path: Path) -> dict:
    st = Store(path, TARGETS)
    t = st.read("targets", np.arange(st.n_images), view=0).astype(np.float64)
    pos = (t > 0).mean(0)
    return {"positive_fraction": float((t > 0).mean()),
            "channels_positive_on_under_5pct": int((pos < 0.05).sum()), "channels": t.shape[1]}


def main() -> None:
    study = Path(sys.argv[1] if len(sys.argv) > 1 else "repro-out/same-size")
    out = Path(sys.argv[2] if len(sys.argv) > 2 else
               "benchmarks/results/repro-same-size-sparsity.json")
    torch.set_num_threads(1)
    data = open_downstream(str(study / "datasets" / "cifar10"))
    doc = {"command": " ".join(["benchmarks/student_sparsity.py", *sys.argv[1:]]),
           "images": len(data.test.paths), "set": "cifar10 downstream test", "rows": {}}
    for tag, targets in ROWS.items():
        st = resolve_student(tag if tag.startswith("random:") else str(study / "students" / tag))
        net = st.build(len(data.classes), 0).eval()
        size = st.image_size or 32  # as transfer: the student's own size and normalization
        ds = FolderDataset(data.test, test_transform(size, *st.mean_std), size)
        batches = [(x, y) for x, y, _ in torch.utils.data.DataLoader(ds, batch_size=100)]
        f, _ = extract_features(net, batches, torch.device("cpu"), "fp32")
        row = {"feature_zero_fraction": float((f == 0).mean()),
               "channels_active_on_under_1pct": int(((f > 0).mean(0) < 0.01).sum()),
               "channels": f.shape[1]}
        if targets:
            row["targets"] = targets_sidedness(study / targets)
        doc["rows"][tag] = row
        print(tag, json.dumps(row), flush=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""training/train.py with 2 CPU processes under torchrun (gloo): both ranks log the same loss and end with the same
weights. A wrapper records, on every rank, what that rank passed to ``accelerator.log`` and a hash of its model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gesco_diffusers.evaluation.distributed import launch_mismatch

from fixture_data import CAMVID
from test_distributed import _env, _run

REPO = Path(__file__).resolve().parents[1]

WRAPPER = r'''
import hashlib, importlib.util, json, os, sys
import accelerate

spec = importlib.util.spec_from_file_location("train", sys.argv[1])
train = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train)
seen = {"logs": []}

class Recording(accelerate.Accelerator):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        seen["accelerator"] = self

    def log(self, values, step=None, log_kwargs=None):
        seen["logs"].append({"step": step, **values})
        return super().log(values, step=step)

train.Accelerator = Recording
train.main(train.parse_args(sys.argv[3:]))
acc = seen["accelerator"]
digest = hashlib.sha1()
for name, tensor in sorted(acc.unwrap_model(acc._models[0]).state_dict().items()):
    digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
with open(os.path.join(sys.argv[2], f"rank{acc.process_index}.json"), "w") as f:
    json.dump({"num_processes": acc.num_processes, "logs": seen["logs"], "weights": digest.hexdigest()}, f)
'''


def test_two_cpu_ranks_agree_on_loss_and_weights(tmp_path):
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(WRAPPER)
    report = tmp_path / "ranks"
    report.mkdir()
    out = tmp_path / "run"
    args = ["--dataset", "camvid", "--data_dir", str(CAMVID), "--model_config", "tiny", "--resolution", "16", "24",
            "--max_train_samples", "4", "--train_batch_size", "1", "--num_validation_maps", "2",
            "--validation_steps", "100", "--validation_inference_steps", "2", "--checkpointing_steps", "100",
            "--max_train_steps", "3", "--seed", "7", "--output_dir", str(out), "--report_to", "none"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(wrapper),
           str(REPO / "training" / "train.py"), str(report), *args]
    _run(cmd, _env(tmp_path), timeout=400)
    ranks = [json.loads((report / f"rank{i}.json").read_text()) for i in (0, 1)]
    assert [r["num_processes"] for r in ranks] == [2, 2]
    assert [entry["step"] for entry in ranks[0]["logs"]] == [1, 2, 3]
    assert ranks[0]["logs"] == ranks[1]["logs"]  # the loss reduced over both ranks: one value, on each rank
    assert ranks[0]["weights"] == ranks[1]["weights"]  # DDP: the same weights after 3 steps
    log = [json.loads(line) for line in (out / "train_log.jsonl").open()]
    assert [r["step"] for r in log] == [1, 2, 3]  # written once (main process)
    assert [r["loss"] for r in log] == [entry["loss"] for entry in ranks[0]["logs"]]


def test_launch_mismatch_is_detected(monkeypatch):
    for key in ("WORLD_SIZE", "MASTER_ADDR", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    assert launch_mismatch(1) is None
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")  # accelerate launch --cpu --num_processes 2: one process
    assert "accelerate launch --cpu --num_processes N starts a single process" in launch_mismatch(1)
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun's 2 processes, each alone (PartialState without cpu=True)
    assert "started 2 processes but they did not join one group" in launch_mismatch(1)
    assert launch_mismatch(2) is None


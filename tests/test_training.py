"""Training (issue #4): noisy-map schedule, CFG dropout, EMA, checkpoints, configs, gradient flow, and
``accelerate launch training/train.py`` end to end, including kill-and-resume reproducibility."""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy.stats import chi2

from _scripts import load_script
from gesco_diffusers.channel import empirical_psnr
from gesco_diffusers.data import SemanticDataError
from gesco_diffusers.diffusion import GaussianDiffusion, default_scheduler
from gesco_diffusers.models import SemanticUNet2DModel, semantic_unet_config
from gesco_diffusers.pipelines import GescoPipeline
from gesco_diffusers.receiver import fast_denoise
from gesco_diffusers.sender import SemanticEncoder
from gesco_diffusers.training import (
    ConstantDecayEMAModel,
    NoisyMapSchedule,
    SemanticDiffusionObjective,
    build_ema,
    check_output_dir,
    commit_directory,
    drop_conditioning,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_state,
    resolve_checkpoint,
    rotate_checkpoints,
    save_checkpoint,
    write_state,
)

from fixture_data import CAMVID  # 6 train + 4 val CamVid pairs

REPO = Path(__file__).resolve().parents[1]


train = load_script("gesco_train_script", REPO / "training" / "train.py")


@pytest.fixture
def one_thread():
    """Tiny models run several times faster on one thread on a loaded 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------------------------------------
# Noisy-map schedule (paper Sec. IV-A)


def chi_square(counts: dict, probabilities: dict, n: int) -> float:
    return sum((counts.get(k, 0) - n * p) ** 2 / (n * p) for k, p in probabilities.items())


@pytest.mark.parametrize("schedule,expected", [
    (NoisyMapSchedule(), {None: 0.3, **{p: 0.7 / 6 for p in (30.0, 25.0, 20.0, 15.0, 10.0, 1.0)}}),
    (NoisyMapSchedule.official(), {None: 3 / 9, **{p: 1 / 9 for p in (30.0, 25.0, 20.0, 15.0, 10.0, 5.0)}}),
])
def test_noise_schedule_draws_the_stated_proportions(schedule, expected):
    assert schedule.outcome_probabilities == pytest.approx(expected)
    n = 12000
    generator = torch.Generator().manual_seed(0)
    draws = [schedule.sample(generator) for _ in range(n)]
    counts = {k: draws.count(k) for k in set(draws)}
    assert set(counts) == set(expected)
    # Chi-square goodness of fit, 6 degrees of freedom, false-alarm probability 1e-4.
    assert chi_square(counts, expected, n) < chi2.ppf(1 - 1e-4, df=len(expected) - 1)
    again = torch.Generator().manual_seed(0)
    assert [schedule.sample(again) for _ in range(50)] == draws[:50]


def test_noise_schedule_detects_wrong_proportions():
    # The same statistic rejects a schedule whose clean share is 0.4 instead of 0.3 (the test can fail).
    skewed = NoisyMapSchedule(clean_probability=0.4)
    generator = torch.Generator().manual_seed(0)
    draws = [skewed.sample(generator) for _ in range(12000)]
    expected = NoisyMapSchedule().outcome_probabilities
    assert chi_square({k: draws.count(k) for k in set(draws)}, expected, 12000) > chi2.ppf(1 - 1e-4, df=6)


def test_noise_goes_through_the_inference_channel_on_transmitted_channels_only():
    labels = torch.zeros(2, 64, 64, dtype=torch.long)
    labels[:, :, 32:] = 3
    encoded = SemanticEncoder(12).encode(labels)
    schedule = NoisyMapSchedule()
    noisy = schedule.corrupt(encoded.one_hot, encoded.transmitted, 10.0, torch.Generator().manual_seed(0))
    absent = ~encoded.transmitted
    assert torch.count_nonzero(noisy[absent]) == 0
    sent = encoded.transmitted
    assert empirical_psnr(encoded.one_hot[sent], noisy[sent]) == pytest.approx(10.0, abs=0.3)
    assert schedule.corrupt(encoded.one_hot, encoded.transmitted, None) is encoded.one_hot
    official = NoisyMapSchedule.official()
    noisy = official.corrupt(encoded.one_hot, encoded.transmitted, 10.0, torch.Generator().manual_seed(0))
    assert (noisy[sent] - encoded.one_hot[sent]).std().item() == pytest.approx(0.36, rel=0.03)
    with pytest.raises(ValueError, match="not one of"):
        schedule.corrupt(encoded.one_hot, encoded.transmitted, 12.0)
    with pytest.raises(ValueError, match="official table"):
        NoisyMapSchedule(psnrs=(12.0,), psnr_convention="official_table")


def test_train_fds_denoises_the_noisy_maps():
    encoded = SemanticEncoder(12).encode(torch.randint(0, 4, (1, 16, 16), generator=torch.Generator().manual_seed(1)))
    plain, with_fds = NoisyMapSchedule(), NoisyMapSchedule(fds=True)
    received = plain.corrupt(encoded.one_hot, encoded.transmitted, 15.0, torch.Generator().manual_seed(2))
    denoised = with_fds.corrupt(encoded.one_hot, encoded.transmitted, 15.0, torch.Generator().manual_seed(2))
    assert torch.equal(denoised, fast_denoise(received, encoded.transmitted))
    assert not torch.equal(denoised, received)


def test_cfg_dropout_nulls_whole_maps_with_the_given_probability():
    maps = torch.rand(4000, 3, 2, 2) + 0.5
    out = drop_conditioning(maps, 0.1, torch.Generator().manual_seed(0))
    dropped = out.flatten(1).abs().sum(1) == 0
    assert torch.equal(out[~dropped], maps[~dropped])  # kept maps untouched, dropped ones exact zeros
    p_hat = dropped.float().mean().item()
    assert abs(p_hat - 0.1) < 4 * math.sqrt(0.1 * 0.9 / 4000)
    assert torch.equal(drop_conditioning(maps[:5], 0.0), maps[:5])
    assert torch.count_nonzero(drop_conditioning(maps[:5], 1.0)) == 0


class SpyUNet(torch.nn.Module):
    """Records the conditioning map and returns zeros (with the learned-variance channels)."""

    def forward(self, x, t, segmap):
        self.segmap = segmap
        return type("Out", (), {"sample": torch.zeros(x.shape[0], 6, *x.shape[2:])})()


def test_objective_feeds_noisy_or_null_maps():
    diffusion = GaussianDiffusion.from_scheduler(default_scheduler())
    labels = torch.randint(0, 12, (3, 8, 8), generator=torch.Generator().manual_seed(0))
    images = torch.zeros(3, 3, 8, 8)
    spy = SpyUNet()
    clean = SemanticDiffusionObjective(diffusion, SemanticEncoder(12), NoisyMapSchedule(clean_probability=1.0), 0.0)
    out = clean(spy, images, labels, generator=torch.Generator().manual_seed(0))
    assert out["psnr"] is None and torch.equal(spy.segmap, SemanticEncoder(12).encode(labels).one_hot)
    assert out["mse"].shape == (3,) and out["loss"].ndim == 0
    null = SemanticDiffusionObjective(diffusion, SemanticEncoder(12), NoisyMapSchedule(), 1.0)
    null(spy, images, labels, generator=torch.Generator().manual_seed(0))
    assert torch.count_nonzero(spy.segmap) == 0


# ----------------------------------------------------------------------------------------------------------------------
# EMA


def test_ema_uses_the_constant_paper_decay_from_the_first_step():
    param = torch.nn.Parameter(torch.zeros(3))
    ema = build_ema([param], decay=0.9)
    assert isinstance(ema, ConstantDecayEMAModel)
    with torch.no_grad():
        param.fill_(1.0)
    ema.step([param])
    torch.testing.assert_close(ema.shadow_params[0], torch.full((3,), 0.1))  # 0.9 * 0 + 0.1 * 1
    ema.step([param])
    torch.testing.assert_close(ema.shadow_params[0], torch.full((3,), 0.19))
    diffusers_default = build_ema([torch.nn.Parameter(torch.zeros(3))], decay=0.9, schedule="diffusers")
    diffusers_default.step([param])
    assert torch.equal(diffusers_default.shadow_params[0], torch.ones(3))  # diffusers copies at its first step


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoint folders


def test_latest_ignores_half_written_checkpoints(tmp_path):
    for name in ("checkpoint-2", "checkpoint-10", ".checkpoint-12.tmp", "checkpoint-x", "checkpoint-11.old"):
        (tmp_path / name).mkdir()
    (tmp_path / "checkpoint-20").write_text("a file, not a checkpoint folder")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-10"]
    assert latest_checkpoint(tmp_path).name == "checkpoint-10"
    assert resolve_checkpoint("latest", tmp_path).name == "checkpoint-10"
    assert resolve_checkpoint("checkpoint-2", tmp_path) == tmp_path / "checkpoint-2"
    assert resolve_checkpoint("latest", tmp_path / "empty") is None
    with pytest.raises(ValueError, match="committed checkpoint"):
        resolve_checkpoint(str(tmp_path / ".checkpoint-12.tmp"), tmp_path)
    with pytest.raises(FileNotFoundError):
        resolve_checkpoint("checkpoint-99", tmp_path)
    assert [p.name for p in rotate_checkpoints(tmp_path, 1)] == ["checkpoint-2"]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-10"]


def test_commit_replaces_an_existing_checkpoint(tmp_path):
    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "checkpoint-4" / "old").write_text("old")
    tmp = tmp_path / ".checkpoint-4.tmp"
    tmp.mkdir()
    (tmp / "new").write_text("new")
    commit_directory(tmp, tmp_path / "checkpoint-4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4"]
    assert [p.name for p in (tmp_path / "checkpoint-4").iterdir()] == ["new"]


def test_save_checkpoint_writes_through_a_temporary_folder(tmp_path):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(torch.nn.Linear(2, 2))
    junk = tmp_path / ".checkpoint-3.tmp"  # debris of a save that was killed
    junk.mkdir()
    (junk / "garbage").write_text("x")
    for step in (1, 2, 3):
        save_checkpoint(accelerator, tmp_path, step, total_limit=2, models={"model": model}, optimizers={},
                        schedulers={})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "checkpoint-3"]
    assert not (tmp_path / "checkpoint-3" / "garbage").exists()
    assert (tmp_path / "checkpoint-3" / "model.safetensors").is_file()
    del model


# ----------------------------------------------------------------------------------------------------------------------
# Pickle-free training state (issue #14)


class PlantedCode:
    """Unpickling this object opens (creates) ``marker``: what a planted checkpoint file could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


#: The pickle files Accelerate's save_state/load_state use, plus train_judge's former training_state.pt.
PICKLE_NAMES = ("custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin", "scheduler.bin",
                "pytorch_model.bin", "scaler.pt", "training_state.pt")


def plant_pickles(folder: Path, marker: Path) -> None:
    for name in PICKLE_NAMES:
        torch.save({"state": PlantedCode(marker)}, folder / name)


def test_planted_pickles_do_run_code_when_unpickled(tmp_path):
    """The bait works: loading it the way Accelerate loads registered objects (weights_only=False) runs it."""
    plant_pickles(tmp_path, tmp_path / "ran")
    torch.load(tmp_path / "custom_checkpoint_0.pkl", weights_only=False)
    assert (tmp_path / "ran").exists()


def toy_training(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.95), weight_decay=0.01)
    from diffusers.optimization import get_scheduler

    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=2, num_training_steps=12)
    return model, optimizer, scheduler, build_ema(model.parameters(), decay=0.9)


def toy_steps(model, optimizer, scheduler, ema, steps) -> list[float]:
    losses = []
    for step in steps:  # data drawn from the step counter, as in train.py
        x = torch.randn(5, 3, generator=torch.Generator().manual_seed(step))
        loss = model(x).pow(2).mean()
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        ema.step(model.parameters())
        losses.append(loss.item())
    return losses


def test_checkpoint_round_trip_resumes_exactly_without_pickle(tmp_path):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model, optimizer, scheduler, ema = toy_training(0)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    toy_steps(model, optimizer, scheduler, ema, range(3))
    state = dict(models={"model": model}, optimizers={"optimizer": optimizer}, schedulers={"lr_scheduler": scheduler},
                 emas={"ema": ema})
    path = save_checkpoint(accelerator, tmp_path, 3, extra={"epoch": 1, "pair": ("a", 2)}, **state)
    assert sorted(p.name for p in path.iterdir()) == [
        "checkpoint.json", "ema.json", "ema.safetensors", "lr_scheduler.json", "model.safetensors",
        "optimizer.json", "optimizer.safetensors"]
    reference = toy_steps(model, optimizer, scheduler, ema, range(3, 6))

    other, other_optimizer, other_scheduler, other_ema = toy_training(1)  # different initial weights
    other, other_optimizer, other_scheduler = accelerator.prepare(other, other_optimizer, other_scheduler)
    plant_pickles(path, tmp_path / "ran")  # never opened: only checkpoint.json and the named files are read
    resumed = dict(models={"model": other}, optimizers={"optimizer": other_optimizer},
                   schedulers={"lr_scheduler": other_scheduler}, emas={"ema": other_ema})
    assert load_checkpoint(accelerator, path, **resumed) == {"epoch": 1, "pair": ("a", 2)}
    assert toy_steps(other, other_optimizer, other_scheduler, other_ema, range(3, 6)) == reference
    for ours, theirs in zip(other.parameters(), model.parameters()):
        assert torch.equal(ours, theirs)
    for ours, theirs in zip(other_ema.shadow_params, ema.shadow_params):
        assert torch.equal(ours, theirs)
    assert other_ema.optimization_step == ema.optimization_step == 6
    assert other_scheduler.get_last_lr() == scheduler.get_last_lr()
    assert other_optimizer.state_dict()["param_groups"][0]["betas"] == (0.8, 0.95)
    assert not (tmp_path / "ran").exists()

    with pytest.raises(ValueError, match=r"holds emas \['ema'\], this run has \[\]"):
        load_checkpoint(accelerator, path, **{**resumed, "emas": {}})
    with pytest.raises(ValueError, match="does not fit this model"):
        load_checkpoint(accelerator, path, **{**resumed, "emas": {"ema": build_ema(torch.nn.Linear(2, 2).parameters())}})
    with pytest.raises(ValueError, match="not usable as file stems"):
        save_checkpoint(accelerator, tmp_path, 4, models={"checkpoint": model}, optimizers={}, schedulers={})


def test_checkpoint_keeps_the_mixed_precision_grad_scaler(tmp_path):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(2, 2)
    accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=7)  # what fp16 runs hold
    path = save_checkpoint(accelerator, tmp_path, 1, models={"model": model}, optimizers={}, schedulers={})
    assert (path / "grad_scaler.json").is_file()
    accelerator.scaler = torch.amp.GradScaler("cpu")
    load_checkpoint(accelerator, path, models={"model": model}, optimizers={}, schedulers={})
    assert accelerator.scaler.state_dict() == {"scale": 1024.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                                               "growth_interval": 7, "_growth_tracker": 0}


def test_resuming_never_unpickles_planted_files(tmp_path):
    """A folder with Accelerate's pickles (and no checkpoint.json) is refused in one line; nothing is unpickled."""
    from accelerate import Accelerator

    folder = tmp_path / "checkpoint-5"
    folder.mkdir()
    plant_pickles(folder, tmp_path / "ran")
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="no checkpoint.json: not a checkpoint of this version") as info:
        load_checkpoint(Accelerator(cpu=True), folder, models={"model": model}, optimizers={}, schedulers={})
    assert len(str(info.value).splitlines()) == 1 and not (tmp_path / "ran").exists()


def test_state_files_keep_types_and_shared_tensors(tmp_path):
    shared = torch.arange(4.0)
    state = {"ints": {0: torch.ones(2), 7: (1, 2.5, None, "x")}, "flag": True, "nan": float("inf"),
             "a": shared, "b": shared, "view": shared[1:3], "array": np.arange(3), "__tuple__": [1]}
    write_state(tmp_path, "thing", state)
    loaded = read_state(tmp_path, "thing")
    assert set(loaded) == set(state) and loaded["ints"][7] == (1, 2.5, None, "x") and loaded["flag"] is True
    assert torch.equal(loaded["ints"][0], torch.ones(2)) and loaded["nan"] == float("inf")
    assert torch.equal(loaded["b"], shared) and torch.equal(loaded["view"], shared[1:3])
    assert np.array_equal(loaded["array"], np.arange(3)) and loaded["__tuple__"] == [1]
    with pytest.raises(TypeError, match="cannot be stored without pickle"):
        write_state(tmp_path, "bad", {"object": Path("/")})


# ----------------------------------------------------------------------------------------------------------------------
# Output folders (issue #14): a new run never writes over an earlier one unasked


def earlier_run(folder: Path, checkpoint: bool = True) -> dict[str, bytes]:
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"weights")
    (folder / "model_index.json").write_text("{}")
    (folder / "train_log.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
    (folder / "notes.txt").write_text("mine")
    if checkpoint:
        (folder / "checkpoint-2").mkdir()
        (folder / "checkpoint-2" / "checkpoint.json").write_text("{}")
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_check_output_dir_refuses_resumes_or_overwrites_explicitly(tmp_path):
    assert check_output_dir(tmp_path / "new", None, False) == []
    (tmp_path / "empty").mkdir()
    assert check_output_dir(tmp_path / "empty", None, False) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="exists and is not a folder"):
        check_output_dir(tmp_path / "file", None, False)
    run = tmp_path / "run"
    files = earlier_run(run)
    with pytest.raises(FileExistsError) as info:
        check_output_dir(run, None, False)
    message = str(info.value)
    assert str(run) in message and "--resume_from_checkpoint latest" in message and "--overwrite_output_dir" in message
    assert len(message.splitlines()) == 1
    assert check_output_dir(run, "latest", False) == []
    with pytest.raises(ValueError, match="contradict"):
        check_output_dir(run, "latest", True)
    assert check_output_dir(run, None, True, is_main_process=False) == []  # only the main process deletes
    after = {p.relative_to(run).as_posix(): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == files
    removed = check_output_dir(run, None, True, is_main_process=True)
    assert sorted(p.name for p in removed) == ["checkpoint-2", "model_index.json", "train_log.jsonl", "unet"]
    assert [p.name for p in run.iterdir()] == ["notes.txt"]  # not a run file: kept

    no_checkpoint = tmp_path / "killed-early"
    earlier_run(no_checkpoint, checkpoint=False)
    with pytest.raises(FileExistsError, match="no committed checkpoint to resume from"):
        check_output_dir(no_checkpoint, "latest", False)


def test_train_refuses_an_earlier_run_before_writing_anything(tmp_path):
    out = tmp_path / "run"
    files = earlier_run(out)
    with pytest.raises(FileExistsError, match="--overwrite_output_dir"):
        train.main(train.parse_args(tiny_args(out, extra=["--report_to", "none"])))
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == files
    assert train.parse_args(tiny_args(out, extra=["--overwrite_output_dir"])).overwrite_output_dir is True


def test_resume_drops_a_half_written_last_log_line(tmp_path, caplog):
    log = tmp_path / "train_log.jsonl"
    log.write_text("".join(json.dumps({"step": i, "loss": 0.5}) + "\n" for i in range(1, 6)) + '{"step": 6, "lo')
    train.truncate_log(log, 4)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3, 4]
    log.write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n')
    with pytest.raises(ValueError, match="line 2: not a JSON record"):
        train.truncate_log(log, 3)


def test_tracker_config_never_holds_secrets():
    args = train.parse_args(tiny_args("out"))
    args.hub_token, args.wandb_api_key = "hf_" + "x" * 34, "abcdef"
    config = train.tracker_config(args)
    assert config["hub_token"] == config["wandb_api_key"] == "[redacted]" and config["learning_rate"] == 1e-4


# ----------------------------------------------------------------------------------------------------------------------
# Config files and presets


def test_presets_parse_with_the_paper_values():
    for name in ("cityscapes", "coco-stuff", "ade20k"):
        args = train.parse_args(["--config", str(REPO / "training" / "configs" / f"{name}.yaml")])
        assert (args.train_batch_size, args.learning_rate, args.adam_weight_decay) == (4, 1e-4, 0.0)
        assert (args.mixed_precision, args.num_train_timesteps, args.beta_schedule) == ("fp16", 1000, "linear")
        assert (args.vlb_weight, args.ema_decay, args.clean_probability) == (0.001, 0.9999, 0.3)
        assert args.noise_psnrs == [30, 25, 20, 15, 10, 1] and args.dataset == name
        config = semantic_unet_config(args.model_config)
        attention = [kind.startswith("SemanticAttn") for kind in config["down_block_types"]]
        assert attention == [False, False, False, True, True, True]  # 32, 16, 8 for a 256 input
        assert config["attention_head_dim"] == 64
        assert config["block_out_channels"] == (256, 256, 512, 512, 1024, 1024)
    assert train.parse_args(["--config", str(REPO / "training/configs/cityscapes.yaml")]).resolution == [256, 512]
    camvid = str(REPO / "training" / "configs" / "camvid-small.yaml")
    small = train.parse_args(["--config", camvid, "--data_dir", "path/to/camvid"])
    assert (small.model_config, small.resolution, small.train_batch_size) == ("camvid-small", [64, 80], 8)
    # No config points at data a user does not have (a folder beside the repository): the folder is an argument.
    with pytest.raises(ValueError, match="needs --data_dir .*SegNet split"):
        train.parse_args(["--config", camvid])
    assert not any("../" in path.read_text() for path in (REPO / "training" / "configs").glob("*.yaml"))


def test_cli_overrides_config_and_bad_keys_fail(tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"dataset": "camvid", "data_dir": "d", "max_train_steps": 5, "use_ema": False,
                                  "resolution": [32, 40], "noise_psnrs": [20, 10]}))
    args = train.parse_args(["--config", str(config), "--max_train_steps", "7", "--use_ema"])
    assert (args.max_train_steps, args.use_ema, args.resolution, args.noise_psnrs) == (7, True, [32, 40], [20, 10])
    config.write_text(json.dumps({"dataset": "camvid", "data_dir": "d", "max_train_step": 5}))
    with pytest.raises(ValueError, match="max_train_step"):
        train.parse_args(["--config", str(config)])
    config.write_text(json.dumps({"dataset": "camvid", "data_dir": "d", "max_train_steps": 5,
                                  "mixed_precision": "fp8"}))
    with pytest.raises(SystemExit):  # argparse's own choices check applies to config values too
        train.parse_args(["--config", str(config)])


# ----------------------------------------------------------------------------------------------------------------------
# Gradient flow: overfitting one fixed batch


def test_overfitting_a_fixed_batch_lowers_the_loss(one_thread):
    torch.manual_seed(0)
    unet = SemanticUNet2DModel(**semantic_unet_config("tiny"))
    initial = {k: v.clone() for k, v in unet.state_dict().items()}
    objective = SemanticDiffusionObjective(GaussianDiffusion.from_scheduler(default_scheduler()), SemanticEncoder(12),
                                           NoisyMapSchedule(clean_probability=1.0), cfg_drop_probability=0.0)
    g = torch.Generator().manual_seed(1)
    images, labels = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1, torch.randint(0, 12, (2, 8, 8), generator=g)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=2e-3)
    losses = []
    for _ in range(60):
        out = objective(unet, images, labels, generator=torch.Generator().manual_seed(3))  # same t and noise
        out["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(out["loss"].item())
    assert losses[0] > 0.5 and losses[-1] < 0.1 * losses[0]
    unchanged = [k for k, v in unet.state_dict().items() if torch.equal(v, initial[k])]
    assert unchanged == []  # every tensor, SPADE and variance channels included, received gradient


# ----------------------------------------------------------------------------------------------------------------------
# train.py end to end


def tiny_args(output_dir, steps=8, extra=()):
    return ["--dataset", "camvid", "--data_dir", str(CAMVID), "--model_config", "tiny", "--resolution", "16", "24",
            "--max_train_samples", "6", "--train_batch_size", "2", "--num_validation_maps", "2",
            "--validation_steps", "100", "--validation_inference_steps", "2", "--checkpointing_steps", "2",
            "--checkpoints_total_limit", "2", "--max_train_steps", str(steps), "--seed", "7",
            "--output_dir", str(output_dir), *extra]


def read_log(output_dir):
    return [json.loads(line) for line in (Path(output_dir) / train.TRAIN_LOG).open()]


@pytest.fixture(scope="module")
def launched_run(tmp_path_factory):
    """An uninterrupted 8-step run through ``accelerate launch`` (CPU, one process)."""
    out = tmp_path_factory.mktemp("launched")
    report = "tensorboard" if importlib.util.find_spec("tensorboard") else "none"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "training" / "train.py"),
           *tiny_args(out, extra=["--report_to", report])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    # The run takes ~25 s on an idle 2-core CPU (mostly imports); the generous timeout absorbs a shared, loaded CPU.
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def test_accelerate_launch_trains_and_writes_a_loadable_pipeline(launched_run):
    log = read_log(launched_run)
    assert [r["step"] for r in log] == list(range(1, 9))
    assert log[-1]["elapsed_s"] < 120  # set-up, data check and 8 steps, imports excluded
    assert all(math.isfinite(r["loss"]) and r["loss"] == pytest.approx(r["mse"] + r["vb"], rel=1e-5) for r in log)
    assert [p.name for p in list_checkpoints(launched_run)] == ["checkpoint-6", "checkpoint-8"]
    assert (launched_run / "validation" / "step-000008.png").is_file()
    pipe = GescoPipeline.from_pretrained(str(launched_run))
    assert pipe.dataset_preset.name == "camvid" and pipe.dataset_preset.resolution == (16, 24)
    assert pipe.scheduler.config.num_train_timesteps == 1000 and pipe.scheduler.config.beta_schedule == "linear"
    labels = torch.randint(0, 12, (1, 16, 24), generator=torch.Generator().manual_seed(0))
    images = pipe(labels, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (1, 16, 24, 3) and np.isfinite(images).all()
    # The pipeline holds the EMA weights (decay 0.9999), not the last training weights: exactly the EMA saved with the
    # last checkpoint, and that EMA moved from the one saved two steps earlier by what the decay allows, i.e.
    # ema_8 - ema_6 = (1 - d) (d (w_7 - ema_6) + (w_8 - ema_6)): about 2 (1 - d) of the way to the weights (measured
    # 1.8 (1 - d); exporting the weights would give 1, a decay of 0.999 about 20 (1 - d), the older EMA 0).
    exported = [p.detach() for p in pipe.unet.parameters()]
    ema_8, ema_6 = (read_state(launched_run / name, "ema") for name in ("checkpoint-8", "checkpoint-6"))
    assert ema_8["optimization_step"] == 8 and ema_8["decay"] == 0.9999
    assert len(ema_8["shadow_params"]) == len(exported)
    assert all(torch.equal(a, b) for a, b in zip(ema_8["shadow_params"], exported))
    trained = load_file(str(launched_run / "checkpoint-8" / "model.safetensors"))
    names = [name for name, _ in pipe.unet.named_parameters()]
    flat = lambda tensors: torch.cat([t.flatten().double() for t in tensors])  # noqa: E731
    start = flat(ema_6["shadow_params"])
    moved = (flat(exported) - start).norm() / (flat(trained[name] for name in names) - start).norm()
    assert 0.5 < float(moved) / (1 - 0.9999) < 3.0, float(moved)


def test_killed_and_resumed_run_matches_the_uninterrupted_one(launched_run, tmp_path, monkeypatch, one_thread):
    out = tmp_path / "resumed"
    real_save = train.save_checkpoint

    def killed_while_saving(accelerator, output_dir, step, total_limit=None, **state):
        if step == 6:  # die half-way through writing checkpoint 6
            tmp = Path(output_dir) / f".checkpoint-{step}.tmp"
            tmp.mkdir()
            (tmp / "model.safetensors").write_bytes(b"truncated")
            raise KeyboardInterrupt("simulated kill")
        return real_save(accelerator, output_dir, step, total_limit, **state)

    monkeypatch.setattr(train, "save_checkpoint", killed_while_saving)
    with pytest.raises(KeyboardInterrupt):
        train.main(train.parse_args(tiny_args(out, extra=["--report_to", "none"])))
    monkeypatch.setattr(train, "save_checkpoint", real_save)
    assert latest_checkpoint(out).name == "checkpoint-4" and len(read_log(out)) == 6
    assert read_log(out)[3]["epoch"] == 1  # 3 batches per epoch: the resume point is in the middle of an epoch
    # The file Accelerate's load_state unpickled with weights_only=False (the EMA's): resuming must not open it.
    torch.save({"state": PlantedCode(tmp_path / "ran")}, out / "checkpoint-4" / "custom_checkpoint_0.pkl")
    with (out / train.TRAIN_LOG).open("a") as f:
        f.write('{"step": 7, "epoch": 2, "lo')  # killed while appending a line

    train.main(train.parse_args(tiny_args(out, extra=["--report_to", "none", "--resume_from_checkpoint", "latest"])))
    resumed, reference = read_log(out), read_log(launched_run)
    assert [r["step"] for r in resumed] == list(range(1, 9))  # the lines past checkpoint 4 were replaced
    for a, b in zip(resumed, reference):
        assert (a["epoch"], a["psnr"]) == (b["epoch"], b["psnr"])
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-7)
    for name in ("checkpoint-8/model.safetensors", "unet/diffusion_pytorch_model.safetensors"):
        ours, theirs = load_file(str(out / name)), load_file(str(launched_run / name))
        for key in theirs:
            torch.testing.assert_close(ours[key], theirs[key], rtol=1e-5, atol=1e-6)
    assert not (out / ".checkpoint-6.tmp").exists() and not (tmp_path / "ran").exists()


# Loaded at start-up (sitecustomize) by the launched training process only: while checkpoint 6 is being written, it
# marks the moment and stalls there, so the test can SIGKILL the real process in the middle of the save.
_STALL_SAVE = """
import os, time
from pathlib import Path
import gesco_diffusers.training.checkpoints as checkpoints
_write_state = checkpoints.write_state

def write_state(folder, name, state):
    _write_state(folder, name, state)
    if Path(folder).name == ".checkpoint-6.tmp":
        Path(os.environ["GESCO_TEST_MARKER"]).write_text("saving")
        time.sleep(600)

checkpoints.write_state = write_state
"""


def test_sigkill_of_accelerate_launch_mid_save_resumes_to_the_same_weights(launched_run, tmp_path):
    """A real ``kill -9`` of the launched training processes while checkpoint 6 is half-written; the next launch
    with ``--resume_from_checkpoint latest`` ignores the half-written folder and ends with the uninterrupted weights."""
    import signal
    import time

    hook, out, marker = tmp_path / "hook", tmp_path / "killed", tmp_path / "saving"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_STALL_SAVE)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines",
              "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "training" / "train.py")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": f"{hook}{os.pathsep}{REPO}",
           "GESCO_TEST_MARKER": str(marker)}
    proc = subprocess.Popen(launch + tiny_args(out, extra=["--report_to", "none"]), env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert marker.exists(), proc.stderr.read().decode()[-3000:] if proc.poll() is not None else "timed out"
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and the training process it started
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.stderr.close()
    assert (out / ".checkpoint-6.tmp").is_dir() and latest_checkpoint(out).name == "checkpoint-4"

    env["PYTHONPATH"] = str(REPO)  # no stall this time
    result = subprocess.run(launch + tiny_args(out, extra=["--report_to", "none", "--resume_from_checkpoint", "latest"]),
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["step"] for r in read_log(out)] == list(range(1, 9))
    for name in ("checkpoint-8/model.safetensors", "unet/diffusion_pytorch_model.safetensors"):
        ours, theirs = load_file(str(out / name)), load_file(str(launched_run / name))
        assert ours.keys() == theirs.keys()
        for key in theirs:
            torch.testing.assert_close(ours[key], theirs[key], rtol=1e-5, atol=1e-6)
    assert not (out / ".checkpoint-6.tmp").exists()


def test_time_budget_stops_cleanly(tmp_path, one_thread):
    out = train.main(train.parse_args(tiny_args(tmp_path / "budget", steps=1000,
                                                extra=["--report_to", "none", "--max_train_minutes", "1e-6"])))
    assert [r["step"] for r in read_log(out)] == [1]
    assert latest_checkpoint(out).name == "checkpoint-1" and (out / "model_index.json").is_file()


def test_bad_data_fails_before_the_first_step(tmp_path):
    import PIL.Image

    root = tmp_path / "data"
    for split in ("train", "val"):
        for i in range(2):
            (root / split / "images").mkdir(parents=True, exist_ok=True)
            (root / split / "labels").mkdir(parents=True, exist_ok=True)
            PIL.Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / split / "images" / f"{i}.png")
            PIL.Image.fromarray(np.full((8, 8), 3, np.uint8)).save(root / split / "labels" / f"{i}.png")
    PIL.Image.fromarray(np.full((8, 8), 40, np.uint8)).save(root / "train" / "labels" / "1.png")
    (root / "train" / "labels" / "0.png").unlink()
    args = tiny_args(tmp_path / "out", extra=["--report_to", "none"])
    args[args.index("--data_dir") + 1] = str(root)
    with pytest.raises(SemanticDataError) as info:
        train.main(train.parse_args(args))
    assert "train/labels/1.png" in str(info.value) and "40 (64 px)" in str(info.value)
    assert "train/images/0.png" in str(info.value) and "no label file" in str(info.value)
    assert not (tmp_path / "out" / "train_log.jsonl").exists() and list_checkpoints(tmp_path / "out") == []


# ----------------------------------------------------------------------------------------------------------------------
# Throughput benchmark


def test_throughput_benchmark_quick(capsys):
    bench = load_script("gesco_train_throughput", REPO / "benchmarks" / "train_throughput.py")
    result = bench.main(["--quick", "--model_config", "tiny", "--resolution", "16", "24", "--threads", "1", "--json",
                         "--data_dir", str(CAMVID)])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["images_per_second"] == pytest.approx(result["images_per_second"])
    assert result["images_per_second"] > 0 and result["peak_memory_mb"] > 0 and result["batch_size"] == 2
    assert result["data"] == f"CamVid train ({CAMVID})"  # the fixture's photos, not the random fallback
    assert math.isfinite(result["final_loss"])


def test_a_classes_file_dataset_trains_and_evaluates_in_the_generic_layout(tmp_path, one_thread):
    """``--dataset path/classes.json``: a dataset the package does not know, read from {split}/images and
    {split}/labels; the pipeline carries the file's preset, and ``evaluate`` reads the data through it."""
    from gesco_diffusers.evaluation import ScoringNetworks, channel_grid, evaluate

    classes = json.loads((CAMVID / "classes.json").read_text())
    classes["name"] = "mystreets"
    classes["classes"][3]["name"] = "street"
    (tmp_path / "classes.json").write_text(json.dumps(classes))
    args = tiny_args(tmp_path / "run", steps=2, extra=["--report_to", "none"])
    args[args.index("camvid")] = str(tmp_path / "classes.json")
    out = train.main(train.parse_args(args))
    pipe = GescoPipeline.from_pretrained(str(out))
    assert pipe.dataset_preset.name == "mystreets" and pipe.dataset_preset.class_names[3] == "street"
    report = evaluate(pipe, conditions=channel_grid(["awgn"], psnrs=[10]), data_dir=CAMVID, fds=("paper",),
                      num_inference_steps=1, image_codec=None, rate_distortion=False, device="cpu", limit=2,
                      networks=ScoringNetworks(judge=None, lpips=None, fid=None), out_dir=tmp_path / "eval")
    assert report.settings["dataset"] == "mystreets" and report.settings["num_items"] == 2


def test_inputs_main_finds_wrong_are_one_line_errors(tmp_path, capsys):
    from gesco_diffusers.training import run_script

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    cases = [
        (tiny_args(tmp_path / "run"), "already holds files (an earlier run?)"),
        (tiny_args(tmp_path / "a", extra=["--train_batch_size", "7"]), "6 training rows make no full batch of 7"),
        (tiny_args(tmp_path / "b", extra=["--data_dir", str(tmp_path / "nothing")]), str(tmp_path / "nothing")),
    ]
    for argv, message in cases:
        assert run_script("train.py", train.parse_args, train.main, argv) == 1
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("train.py: error: ") and message in lines[0], lines
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["notes.txt"]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # no empty run folder left behind

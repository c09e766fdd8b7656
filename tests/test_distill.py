"""Few-step GESCO (issue #16): consistency-distillation math, the objective, ``training/distill.py`` end to end with
exact resume, and the student pipeline's call count. Data and teacher are tiny and made here (no ../shared)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import LCMScheduler
from safetensors.torch import load_file

from _scripts import load_script
from _data import write_camvid_like
from gesco_diffusers.diffusion import GaussianDiffusion, official_ddpm_scheduler
from gesco_diffusers.models import SemanticUNet2DModel, semantic_unet_config
from gesco_diffusers.pipelines import GescoPipeline
from gesco_diffusers.sender import SemanticEncoder
from gesco_diffusers.training import NoisyMapSchedule, latest_checkpoint
from gesco_diffusers.training.consistency import (
    ConsistencyDistillationObjective,
    SkippingStepSolver,
    boundary_scalings,
    update_target,
)

REPO = Path(__file__).resolve().parents[1]


distill = load_script("gesco_distill_script", REPO / "training" / "distill.py")


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def diffusion():
    return GaussianDiffusion.from_scheduler(official_ddpm_scheduler())


# ----------------------------------------------------------------------------------------------------------------------
# Math


def test_boundary_scalings_match_diffusers_lcm_scheduler():
    scheduler = LCMScheduler(num_train_timesteps=1000, timestep_scaling=10.0)
    t = torch.tensor([0, 1, 19, 259, 999])
    c_skip, c_out = boundary_scalings(t)
    for i, step in enumerate(t.tolist()):
        ref_skip, ref_out = scheduler.get_scalings_for_boundary_condition_discrete(step)
        assert float(c_skip[i]) == pytest.approx(float(ref_skip), rel=1e-6, abs=1e-9)
        assert float(c_out[i]) == pytest.approx(float(ref_out), rel=1e-6, abs=1e-9)
    assert float(c_skip[0]) == 1.0 and float(c_out[0]) == 0.0  # f(x, 0) = x


def test_solver_grid_is_the_lcm_scheduler_grid():
    solver = SkippingStepSolver(diffusion(), 50)
    scheduler = LCMScheduler(num_train_timesteps=1000, original_inference_steps=50)
    scheduler.set_timesteps(50)
    assert sorted(scheduler.timesteps.tolist()) == solver.grid.tolist()
    start, end = solver.start_and_target_timesteps(torch.tensor([0, 1, 49]))
    assert start.tolist() == [19, 39, 999] and end.tolist() == [0, 19, 979]


def test_solver_is_exact_for_an_oracle_epsilon():
    """With the true noise of x_t = sqrt(abar) x0 + sqrt(1 - abar) eps, a DDIM step lands on the same trajectory."""
    d = diffusion()
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 3, 4, 4, generator=g) * 1.6 - 0.8
    eps = torch.randn(3, 3, 4, 4, generator=g)
    for substeps in (1, 4):
        solver = SkippingStepSolver(d, 25, substeps=substeps)
        start, end = solver.start_and_target_timesteps(torch.tensor([24, 10, 0]))
        x_start = d.q_sample(x0, start, eps)
        x_end = solver.step(lambda x, t: eps, x_start, start, end)
        torch.testing.assert_close(x_end, d.q_sample(x0, end, eps), rtol=1e-4, atol=1e-4)


def test_solver_and_objective_reject_bad_settings():
    with pytest.raises(ValueError, match="divisor"):
        SkippingStepSolver(diffusion(), 7)
    with pytest.raises(ValueError, match="substeps"):
        SkippingStepSolver(diffusion(), 50, substeps=21)
    unet = SemanticUNet2DModel(**semantic_unet_config("tiny"))
    with pytest.raises(ValueError, match="guidance_scale"):
        ConsistencyDistillationObjective(unet, float("nan"), SkippingStepSolver(diffusion(), 50), diffusion(),
                                         SemanticEncoder(12), NoisyMapSchedule())


def test_target_update_is_an_ema():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = a.weight.detach().clone()
    update_target(a, b, 0.9)
    torch.testing.assert_close(a.weight, 0.9 * before + 0.1 * b.weight.detach())


def test_distillation_lowers_the_loss_on_a_fixed_batch(one_thread):
    torch.manual_seed(0)
    teacher = SemanticUNet2DModel(**semantic_unet_config("tiny"))
    torch.nn.init.normal_(teacher.conv_out.weight, std=0.05)  # a teacher with a non-zero output
    teacher.requires_grad_(False)
    student = SemanticUNet2DModel.from_config(teacher.config)
    student.load_state_dict(teacher.state_dict())
    target = SemanticUNet2DModel.from_config(teacher.config)
    target.load_state_dict(teacher.state_dict())
    target.requires_grad_(False)
    d = diffusion()
    objective = ConsistencyDistillationObjective(teacher, 1.5, SkippingStepSolver(d, 10), d, SemanticEncoder(12),
                                                 NoisyMapSchedule(clean_probability=1.0))
    g = torch.Generator().manual_seed(1)
    images, labels = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1, torch.randint(0, 12, (2, 8, 8), generator=g)
    optimizer = torch.optim.AdamW(student.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        out = objective(student, target, images, labels, generator=torch.Generator().manual_seed(3))
        out["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.5 * losses[0]
    assert all(not p.requires_grad or p.grad is None for p in teacher.parameters())


# ----------------------------------------------------------------------------------------------------------------------
# distill.py end to end


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    config = semantic_unet_config("tiny", sample_size=[16, 24])
    teacher = GescoPipeline.from_unet_config(config, dataset="camvid", seed=0)
    torch.nn.init.normal_(teacher.unet.conv_out.weight, std=0.05)
    teacher.save_pretrained(str(root / "teacher"))
    return root / "teacher", write_camvid_like(root / "camvid")


def distill_args(teacher, data, out, steps=6, extra=()):
    return ["--teacher", str(teacher), "--data_dir", str(data), "--num_grid_steps", "10", "--train_batch_size", "2",
            "--max_train_samples", "6", "--max_train_steps", str(steps), "--checkpointing_steps", "2",
            "--checkpoints_total_limit", "2", "--lr_warmup_steps", "0", "--learning_rate", "1e-3",
            "--report_to", "none", "--seed", "5", "--output_dir", str(out), *extra]


def read_log(out):
    return [json.loads(line) for line in (Path(out) / "train_log.jsonl").open()]


def test_distill_writes_a_student_pipeline_that_samples_in_four_calls(tiny_teacher, tmp_path, one_thread):
    teacher, data = tiny_teacher
    out = distill.main(distill.parse_args(distill_args(teacher, data, tmp_path / "fast")))
    assert [r["step"] for r in read_log(out)] == list(range(1, 7))
    pipe = GescoPipeline.from_pretrained(str(out))
    assert isinstance(pipe.scheduler, LCMScheduler) and pipe.scheduler.config.original_inference_steps == 10
    assert pipe.config.semantic_config["num_inference_steps"] == 4
    assert pipe.default_guidance_scale == 1.0
    calls = []
    pipe.unet.register_forward_hook(lambda module, inputs, output: calls.append(inputs[2].shape[0]))
    labels = torch.randint(0, 12, (2, 16, 24), generator=torch.Generator().manual_seed(0))
    images = pipe(labels, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (2, 16, 24, 3) and np.isfinite(images).all()
    assert calls == [2, 2, 2, 2]  # 4 calls, each with one map per image (no guidance pass)
    # The teacher folder is untouched and the student differs from it.
    assert not any(p.name.startswith("checkpoint-") for p in teacher.iterdir())
    student = load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))
    original = load_file(str(teacher / "unet" / "diffusion_pytorch_model.safetensors"))
    assert any(not torch.equal(student[k], original[k]) for k in original)


def test_killed_and_resumed_distillation_matches_the_uninterrupted_one(tiny_teacher, tmp_path, one_thread):
    teacher, data = tiny_teacher
    reference = distill.main(distill.parse_args(distill_args(teacher, data, tmp_path / "ref")))
    out = tmp_path / "resumed"
    distill.main(distill.parse_args(distill_args(teacher, data, out, steps=4)))
    # Extend the run: the log and the final weights equal those of the uninterrupted 6-step run.
    distill.main(distill.parse_args(distill_args(teacher, data, out, extra=["--resume_from_checkpoint", "latest"])))
    assert latest_checkpoint(out).name == "checkpoint-6"
    for a, b in zip(read_log(out), read_log(reference)):
        assert a["step"] == b["step"] and a["psnr"] == b["psnr"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-7)
    ours = load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))
    theirs = load_file(str(reference / "unet" / "diffusion_pytorch_model.safetensors"))
    for key in theirs:
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-5, atol=1e-6)


def test_distill_rejects_bad_teachers_and_output_inside_the_teacher(tiny_teacher, tmp_path):
    teacher, data = tiny_teacher
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a GescoPipeline folder"):
        distill.main(distill.parse_args(distill_args(tmp_path / "empty", data, tmp_path / "x")))
    with pytest.raises(ValueError, match="inside the teacher folder"):
        distill.main(distill.parse_args(distill_args(teacher, data, teacher / "student")))
    eps_only = GescoPipeline.from_unet_config(semantic_unet_config("tiny", sample_size=[16, 24], out_channels=3),
                                              dataset="camvid")
    eps_only.save_pretrained(str(tmp_path / "eps_only"))
    with pytest.raises(ValueError, match="learned-variance"):
        distill.main(distill.parse_args(distill_args(tmp_path / "eps_only", data, tmp_path / "y")))
    with pytest.raises(ValueError, match="num_inference_steps"):
        distill.parse_args(distill_args(teacher, data, tmp_path / "z", extra=["--num_inference_steps", "11"]))


# ----------------------------------------------------------------------------------------------------------------------
# Guidance distillation


def test_guidance_distillation_target_is_the_guided_teacher(one_thread):
    from gesco_diffusers.training.guidance_distillation import GuidanceDistillationObjective

    torch.manual_seed(0)
    teacher = SemanticUNet2DModel(**semantic_unet_config("tiny"))
    with torch.no_grad():  # zero-initialised layers (output, SPADE) would make the map irrelevant: no guidance
        for parameter in teacher.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    teacher.requires_grad_(False)
    student = SemanticUNet2DModel.from_config(teacher.config)
    student.load_state_dict(teacher.state_dict())
    d = diffusion()
    g = torch.Generator().manual_seed(1)
    images, labels = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1, torch.randint(0, 12, (2, 8, 8), generator=g)
    clean = NoisyMapSchedule(clean_probability=1.0)
    # Without guidance the target is the teacher itself: a copy of it has zero loss.
    unguided = GuidanceDistillationObjective(teacher, 1.0, d, SemanticEncoder(12), clean)
    assert unguided(student, images, labels, generator=torch.Generator().manual_seed(3))["loss"].item() == 0.0
    objective = GuidanceDistillationObjective(teacher, 2.0, d, SemanticEncoder(12), clean, timesteps=[999, 300])
    optimizer = torch.optim.AdamW(student.parameters(), lr=2e-3)
    losses = []
    for _ in range(60):
        out = objective(student, images, labels, generator=torch.Generator().manual_seed(3))
        assert set(out["timesteps"].tolist()) <= {999, 300}
        out["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(out["loss"].item())
    assert losses[0] > 0 and losses[-1] < 0.3 * losses[0]
    with pytest.raises(ValueError, match="timesteps"):
        GuidanceDistillationObjective(teacher, 2.0, d, SemanticEncoder(12), clean, timesteps=[1000])


def test_guidance_student_samples_its_stored_schedule_in_four_single_map_calls(tiny_teacher, tmp_path, one_thread):
    teacher, data = tiny_teacher
    out = distill.main(distill.parse_args(distill_args(
        teacher, data, tmp_path / "guided", steps=2,
        extra=["--method", "guidance", "--timesteps", "999", "600", "300", "100"])))
    pipe = GescoPipeline.from_pretrained(str(out))
    stored = pipe.config.semantic_config
    assert stored["timesteps"] == [999, 600, 300, 100] and stored["guidance_scale"] == 1.0
    assert stored["distillation"]["teacher_guidance_scale"] == 1.5
    assert {999, 600, 300, 100} <= set(stored["distillation"]["timesteps"])
    calls = []
    pipe.unet.register_forward_hook(lambda module, inputs, output: calls.append((int(inputs[1].flatten()[0]),
                                                                                  inputs[2].shape[0])))
    labels = torch.randint(0, 12, (2, 16, 24), generator=torch.Generator().manual_seed(0))
    pipe(labels, generator=torch.Generator().manual_seed(0), output_type="np")
    assert calls == [(999, 2), (600, 2), (300, 2), (100, 2)]
    with pytest.raises(ValueError, match="strictly descending"):
        distill.parse_args(distill_args(teacher, data, tmp_path / "z", extra=[
            "--method", "guidance", "--timesteps", "999", "300", "600", "100"]))
    with pytest.raises(ValueError, match="below the teacher's 1000 training timesteps, got 1000"):
        distill.main(distill.parse_args(distill_args(teacher, data, tmp_path / "z", extra=[
            "--method", "guidance", "--timesteps", "1000", "600", "300", "100"])))
    assert not (tmp_path / "z").exists()


# ----------------------------------------------------------------------------------------------------------------------
# The shipped student


def test_the_shipped_fast_model_samples_in_four_single_map_calls(one_thread):
    from gesco_diffusers.shipped import sample_maps, shipped_model_path
    from gesco_diffusers.chain import read_label_map

    folder = shipped_model_path("fast")
    assert (folder / "model_index.json").is_file(), f"the distilled model is not shipped at {folder}"
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < 30 * 2**20
    card = (folder / "README.md").read_text()
    assert card == (Path(__file__).resolve().parents[1] / "hub_cards" / "demo-camvid-fast.README.md").read_text()
    assert "benchmarks/few_step.py" in card and "judge FD (not FID)" in card
    pipe = GescoPipeline.from_pretrained(str(folder), dtype=torch.float32)
    stored = pipe.config.semantic_config
    assert stored["guidance_scale"] == 1.0 and stored["distillation"]["teacher_guidance_scale"] == 1.5
    assert pipe.default_num_inference_steps <= 4
    calls = []
    pipe.unet.register_forward_hook(lambda module, inputs, output: calls.append(inputs[2].shape[0]))
    labels = torch.from_numpy(read_label_map(sample_maps()[0], pipe.dataset_preset))
    labels = torch.nn.functional.interpolate(labels[None, None].float(), size=(64, 80), mode="nearest")[0].long()
    image = pipe(labels, generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    assert image.shape == (64, 80, 3) and np.isfinite(image).all() and image.std() > 0.05
    assert calls == [1] * pipe.default_num_inference_steps


def test_gesco_transmit_runs_the_fast_model(tmp_path, capsys):
    from gesco_diffusers.cli import main

    assert main(["transmit", "--model", "fast", "--output", str(tmp_path), "--json"]) == 0
    import json
    report = json.loads(capsys.readouterr().out)
    assert report["model"].endswith("camvid-fast") and report["steps"] == 4 and report["guidance_scale"] == 1.0


def test_a_stored_schedule_is_the_models_schedule_for_its_step_count(tiny_teacher):
    teacher, _ = tiny_teacher
    pipe = GescoPipeline.from_pretrained(str(teacher))
    student = GescoPipeline(unet=pipe.unet, scheduler=pipe.scheduler,
                            semantic_config={**pipe.config.semantic_config, "guidance_scale": 1.0,
                                             "timesteps": [999, 600, 300, 100]})
    assert student.default_num_inference_steps == 4
    seen = []
    student.unet.register_forward_hook(lambda module, inputs, output: seen.append(int(inputs[1].flatten()[0])))
    labels = torch.randint(0, 12, (1, 16, 24), generator=torch.Generator().manual_seed(0))
    spacing = type(student.scheduler).from_config(student.scheduler.config)
    spacing.set_timesteps(2)
    for steps in (None, 4, 2):
        seen.clear()
        student(labels, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), output_type="np")
        # 2 steps: the scheduler's own spacing
        assert seen == ([999, 600, 300, 100] if steps != 2 else spacing.timesteps.tolist())
    with pytest.raises(ValueError, match="hold 4 steps"):
        GescoPipeline(unet=pipe.unet, scheduler=pipe.scheduler,
                      semantic_config={"num_inference_steps": 3, "timesteps": [999, 600, 300, 100]})


# ----------------------------------------------------------------------------------------------------------------------
# Trajectory distillation


def test_a_student_landing_on_the_teachers_states_has_zero_loss_and_the_last_jump_returns_x0():
    from gesco_diffusers.training.trajectory_distillation import TrajectoryDistillationObjective, student_sampler

    d = diffusion()
    objective = TrajectoryDistillationObjective(d, [999, 749, 499, 249])
    abar = d.buffer("alphas_cumprod").float()
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1, torch.randn(4, 3, 8, 8, generator=g)
    segment = torch.tensor([0, 1, 2, 3])
    now = abar[[999, 749, 499, 249]].reshape(-1, 1, 1, 1)
    after = torch.cat([abar[[749, 499, 249]], torch.ones(1)]).reshape(-1, 1, 1, 1)
    start = now.sqrt() * x0 + (1 - now).sqrt() * eps
    # DDIM keeps (x0, eps): an oracle epsilon lands on the same (x0, eps) one step later, and on x0 after the last;
    # the step is the student's own sampler's (diffusers' DDIMScheduler at 4 trailing steps).
    sampler = student_sampler(official_ddpm_scheduler().config)
    sampler.set_timesteps(4)
    assert sampler.timesteps.tolist() == [999, 749, 499, 249]
    landed = torch.cat([sampler.step(eps[i:i + 1], t, start[i:i + 1]).prev_sample
                        for i, t in enumerate(sampler.timesteps)])
    torch.testing.assert_close(landed, after.sqrt() * x0 + (1 - after).sqrt() * eps, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(landed[3], x0[3], rtol=1e-4, atol=1e-4)
    # The implied x0 of a landing point is the oracle's x0 (the loss is measured in image units).
    torch.testing.assert_close(objective.target_x0(start, landed, segment), x0, rtol=1e-3, atol=1e-3)

    class Oracle(torch.nn.Module):
        def forward(self, sample, t, segmap):
            return type("Out", (), {"sample": torch.cat([eps, torch.zeros_like(eps)], 1)})()

    out = objective(Oracle(), torch.zeros(4, 12, 8, 8), start, landed, segment)
    assert out["loss"].item() < 1e-8 and out["timesteps"].tolist() == [999, 749, 499, 249]

    class SampleOracle(torch.nn.Module):  # an x0-predicting student that outputs the image itself
        def forward(self, sample, t, segmap):
            return type("Out", (), {"sample": torch.cat([x0, torch.zeros_like(x0)], 1)})()

    sample_objective = TrajectoryDistillationObjective(d, [999, 749, 499, 249], prediction_type="sample")
    assert sample_objective(SampleOracle(), torch.zeros(4, 12, 8, 8), start, landed, segment)["loss"].item() < 1e-6
    assert objective(SampleOracle(), torch.zeros(4, 12, 8, 8), start, landed, segment)["loss"].item() > 1.0
    with pytest.raises(ValueError, match="prediction_type"):
        TrajectoryDistillationObjective(d, [999], prediction_type="v_prediction")
    for bad in ([249, 499], [1000, 10], []):
        with pytest.raises(ValueError, match="strictly descending"):
            TrajectoryDistillationObjective(d, bad)


def test_teacher_trajectories_are_the_teachers_own_ddim_run(tiny_teacher):
    from gesco_diffusers.training.trajectory_distillation import teacher_sampler, teacher_trajectories

    teacher = GescoPipeline.from_pretrained(str(tiny_teacher[0]))
    teacher.set_progress_bar_config(disable=True)
    labels = torch.randint(0, 12, (2, 16, 24), generator=torch.Generator().manual_seed(0))
    maps = teacher.prepare_semantic_map(labels, fds=False).conditioning
    noise = torch.randn(2, 3, 16, 24, generator=torch.Generator().manual_seed(1))
    states = teacher_trajectories(teacher, maps, noise, num_student_steps=4, substeps=2, guidance_scale=1.5)
    assert states.shape == (2, 5, 3, 16, 24)
    torch.testing.assert_close(states[:, 0], noise)
    # The last state is the image of the teacher's 8-step guided DDIM run from the same noise; x0 was clipped.
    ddim = GescoPipeline(unet=teacher.unet, scheduler=teacher_sampler(teacher.scheduler.config),
                         semantic_config=teacher.config.semantic_config)
    ddim.set_progress_bar_config(disable=True)
    seen = []
    ddim.unet.register_forward_hook(lambda module, inputs, output: seen.append(int(inputs[1].flatten()[0])))
    images = ddim(maps, fds=False, latents=noise, num_inference_steps=8, guidance_scale=1.5, output_type="pt").images
    torch.testing.assert_close((states[:, -1] + 1) / 2, images, rtol=1e-5, atol=1e-5)
    assert states[:, -1].abs().max() <= 1.0
    assert seen == [999, 874, 749, 624, 499, 374, 249, 124]  # one call per step, map and null map batched
    assert seen[::2] == [999, 749, 499, 249]  # the student's timesteps: the states kept


def test_trajectory_distillation_lowers_the_loss_on_fixed_jumps(one_thread):
    from gesco_diffusers.training.trajectory_distillation import TrajectoryDistillationObjective

    torch.manual_seed(0)
    student = SemanticUNet2DModel(**semantic_unet_config("tiny"))
    objective = TrajectoryDistillationObjective(diffusion(), [999, 749, 499, 249])
    g = torch.Generator().manual_seed(1)
    maps = torch.rand(4, 12, 8, 8, generator=g)
    start, target = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g) * 0.5
    segment = torch.tensor([0, 1, 2, 3])
    optimizer = torch.optim.AdamW(student.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        out = objective(student, maps, start, target, segment)
        out["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.5 * losses[0]


def trajectory_args(teacher, data, out, steps=4, extra=()):
    return distill_args(teacher, data, out, steps, ["--method", "trajectory", "--num_trajectories", "5",
                                                    "--trajectory_shard_size", "2", "--solver_substeps", "2",
                                                    "--student_prediction", "sample", *extra])


def test_trajectory_student_is_a_ddim_student_and_its_recording_resumes(tiny_teacher, tmp_path, one_thread):
    from diffusers import DDIMScheduler

    teacher, data = tiny_teacher
    reference = distill.main(distill.parse_args(trajectory_args(teacher, data, tmp_path / "ref")))
    shards = sorted((reference / "trajectories").glob("shard-*.safetensors"))
    assert [p.name for p in shards] == ["shard-00000.safetensors", "shard-00001.safetensors",
                                        "shard-00002.safetensors"]
    assert load_file(str(shards[2]))["states"].shape == (1, 5, 3, 16, 24)  # 5 trajectories in shards of 2
    pipe = GescoPipeline.from_pretrained(str(reference))
    assert isinstance(pipe.scheduler, DDIMScheduler) and not pipe.scheduler.config.clip_sample
    assert pipe.scheduler.config.prediction_type == "sample"
    stored = pipe.config.semantic_config
    assert stored["num_inference_steps"] == 4 and stored["guidance_scale"] == 1.0
    assert stored["distillation"]["timesteps"] == [999, 749, 499, 249]
    calls = []
    pipe.unet.register_forward_hook(lambda module, inputs, output: calls.append((int(inputs[1].flatten()[0]),
                                                                                  inputs[2].shape[0])))
    labels = torch.randint(0, 12, (2, 16, 24), generator=torch.Generator().manual_seed(0))
    pipe(labels, generator=torch.Generator().manual_seed(0), output_type="np")
    assert calls == [(999, 2), (749, 2), (499, 2), (249, 2)]

    # Killed during the recording (shard 1 missing) and after 2 steps: the resumed run equals the uninterrupted one.
    out = tmp_path / "resumed"
    distill.main(distill.parse_args(trajectory_args(teacher, data, out, steps=2)))
    (out / "trajectories" / "shard-00001.safetensors").unlink()
    distill.main(distill.parse_args(trajectory_args(teacher, data, out, extra=["--resume_from_checkpoint", "latest"])))
    for name in ("shard-00000.safetensors", "shard-00001.safetensors", "shard-00002.safetensors"):
        assert (out / "trajectories" / name).read_bytes() == (reference / "trajectories" / name).read_bytes()
    for a, b in zip(read_log(out), read_log(reference), strict=True):
        assert a["step"] == b["step"] and a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-7)
    # Other settings never mix into recorded trajectories.
    with pytest.raises(ValueError, match="other settings .*solver_substeps"):
        distill.main(distill.parse_args(trajectory_args(teacher, data, out, extra=[
            "--resume_from_checkpoint", "latest", "--solver_substeps", "3"])))


def test_trajectory_distillation_rejects_bad_settings(tiny_teacher, tmp_path):
    teacher, data = tiny_teacher
    with pytest.raises(ValueError, match="exceed the 1000 training timesteps"):
        distill.parse_args(trajectory_args(teacher, data, tmp_path / "a", extra=["--solver_substeps", "300"]))
    with pytest.raises(ValueError, match="num_trajectories"):
        distill.parse_args(trajectory_args(teacher, data, tmp_path / "b", extra=["--num_trajectories", "0"]))
    other = GescoPipeline.from_unet_config(semantic_unet_config("tiny", sample_size=[16, 24], out_channels=3),
                                           dataset="camvid")
    other.save_pretrained(str(tmp_path / "other"))
    with pytest.raises(ValueError, match="student_init .* not the teacher's architecture"):
        distill.main(distill.parse_args(trajectory_args(teacher, data, tmp_path / "c",
                                                        extra=["--student_init", str(tmp_path / "other")])))
    with pytest.raises(ValueError, match="student_init .* not a GescoPipeline folder"):
        distill.main(distill.parse_args(trajectory_args(teacher, data, tmp_path / "d",
                                                        extra=["--student_init", str(tmp_path)])))


def test_inputs_main_finds_wrong_are_one_line_errors_before_any_work(tiny_teacher, tmp_path, capsys):
    from gesco_diffusers.training import run_script

    teacher, data = tiny_teacher
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    cases = [
        (tmp_path / "empty_teacher", tmp_path / "a", "is not a GescoPipeline folder (no model_index.json)"),
        (teacher, teacher / "student", "is inside the teacher folder"),
        (teacher, tmp_path / "run", "already holds files (an earlier run?)"),
    ]
    (tmp_path / "empty_teacher").mkdir()
    for source, out, message in cases:
        argv = trajectory_args(source, data, out)
        assert run_script("distill.py", distill.parse_args, distill.main, argv) == 1
        lines = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("Loading")]
        assert len(lines) == 1 and lines[0].startswith("distill.py: error: ") and message in lines[0], lines
    assert not (tmp_path / "a").exists() and not (teacher / "student").exists()
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["notes.txt"]
    # Trajectories recorded with other settings: refused in one line, the recorded ones kept.
    out = tmp_path / "recorded"
    distill.main(distill.parse_args(trajectory_args(teacher, data, out, steps=2)))
    before = {p.name: p.read_bytes() for p in (out / "trajectories").iterdir()}
    argv = trajectory_args(teacher, data, out, extra=["--resume_from_checkpoint", "latest", "--seed", "6"])
    assert run_script("distill.py", distill.parse_args, distill.main, argv) == 1
    assert "holds trajectories made with other settings (seed)" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (out / "trajectories").iterdir()} == before


def test_balanced_weights_make_every_student_step_count_alike():
    from gesco_diffusers.training.trajectory_distillation import TrajectoryDistillationObjective

    objective = TrajectoryDistillationObjective(diffusion(), [999, 749, 499, 249], prediction_type="sample")
    abar = diffusion().buffer("alphas_cumprod").double()
    snr_249 = (abar[249] / (1 - abar[249])).item()  # the only step with SNR > 1
    assert objective.weights == pytest.approx([1.0, 1.0, 1.0, snr_249]) and snr_249 > 1  # max(SNR_t, 1)
    states = torch.randn(6, 5, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    weights = objective.balance(states)
    for i, w in enumerate(weights):
        target = objective.target_x0(states[:, i], states[:, i + 1], torch.full((6,), i))
        assert w * target.pow(2).mean().item() == pytest.approx(1.0, rel=1e-4)
    with pytest.raises(ValueError, match="states must be"):
        objective.balance(states[:, :3])

"""GescoPipeline with every diffusers scheduler swapped in the documented way:
``pipe.scheduler = Cls.from_config(pipe.scheduler.config)``.

Each scheduler of ``KarrasDiffusionSchedulers`` (plus LCM and TCD, the few-step samplers of a distilled student, and a
flow-matching one) either samples, and then recovers x0 from an oracle noise prediction, or fails before the U-Net
runs with a one-line error naming the class.
"""

import importlib.util

import diffusers
import pytest
import torch
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers

from gesco_diffusers import GescoPipeline, SemanticUNet2DModel
from gesco_diffusers.diffusion import build_scheduler
from gesco_diffusers.diffusion.schedulers import scheduler_incompatibility, scheduler_reads_learned_variance
from gesco_diffusers.models.unet_semantic import SemanticUNet2DOutput
from test_pipeline import gen, labels, pipe  # noqa: F401  (pipe is the tiny CamVid pipeline fixture)

SCHEDULERS = [s.name for s in KarrasDiffusionSchedulers] + ["LCMScheduler", "TCDScheduler",
                                                             "FlowMatchEulerDiscreteScheduler"]

#: Refused by the pipeline before sampling, with the reason the error gives.
REFUSED = {
    "EDMEulerScheduler": "EDMEulerScheduler defines its own noise levels instead of the model's beta schedule",
    "FlowMatchEulerDiscreteScheduler": "FlowMatchEulerDiscreteScheduler is a flow-matching scheduler",
}

#: ``from_config`` itself fails on the default pipeline's config (SDE-DPM-Solver++), with diffusers' own one-line error,
#: and the keyword that makes it work.
FROM_CONFIG_FAILS = {
    "DEISMultistepScheduler": (NotImplementedError,
                               r"sde-dpmsolver\+\+ is not implemented for .*DEISMultistepScheduler",
                               {"algorithm_type": "deis"}),
}
if importlib.util.find_spec("torchsde") is None:  # an optional dependency of diffusers
    FROM_CONFIG_FAILS["DPMSolverSDEScheduler"] = (ImportError, "DPMSolverSDEScheduler requires the torchsde library",
                                                  None)

#: Their last step stops at alpha_bar_0 = 1 - 1e-4 of the paper's schedule, i.e. x0 + 0.01 eps, not at x0 itself.
ENDS_AT_ALPHA_BAR_0 = {"PNDMScheduler", "DEISMultistepScheduler", "TCDScheduler"}

ALPHAS_CUMPROD = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Tiny networks: intra-op threads only add contention on the shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def swap(pipe, name):
    """The documented idiom: the new scheduler class built from the pipeline's scheduler config. For the schedulers
    whose ``from_config`` fails, checks the error, then builds them with the keyword that makes them work (``None``
    when nothing does: a missing optional dependency)."""
    cls = getattr(diffusers, name)
    overrides = {}
    if name in FROM_CONFIG_FAILS:
        error, match, overrides = FROM_CONFIG_FAILS[name]
        with pytest.raises(error, match=match) as err:
            cls.from_config(pipe.scheduler.config)
        assert len(str(err.value).strip().splitlines()) == 1
        if overrides is None:
            return None
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **overrides)
    return pipe.scheduler


def count_unet_calls(pipe) -> list:
    calls = []
    pipe.unet.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    return calls


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_scheduler_samples_after_from_config_or_fails_before_sampling(pipe, name):
    if swap(pipe, name) is None:
        return  # from_config failed with a one-line error naming the class (checked in swap)
    calls = count_unet_calls(pipe)
    if name in REFUSED:
        with pytest.raises(ValueError, match=f"cannot sample with this scheduler: {REFUSED[name]}") as err:
            pipe(labels(), num_inference_steps=4, guidance_scale=2.0, generator=gen(), output_type="pt")
        assert "\n" not in str(err.value)
        assert calls == []  # refused before the U-Net ran
        return
    out = pipe(labels(), num_inference_steps=4, guidance_scale=2.0, generator=gen(), output_type="pt").images
    assert out.shape == (2, 3, 16, 24) and torch.isfinite(out).all()
    assert len(calls) >= 4  # second-order schedulers (Heun, KDPM2) call the U-Net twice per step


class OracleUNet(SemanticUNet2DModel):
    """Predicts the exact noise of ``x_t`` for a fixed image x0 (interpolating alpha_bar at fractional timesteps,
    which the Karras-sigma schedulers use), with zero learned-variance channels."""

    x0 = torch.rand(1, 3, 16, 24, generator=gen(5)) * 1.6 - 0.8

    def forward(self, sample, timestep, segmap, return_dict=True):
        t = float(timestep.reshape(-1)[0])
        low = int(t)
        weight = t - low
        abar = ALPHAS_CUMPROD[low] * (1 - weight) + ALPHAS_CUMPROD[min(low + 1, 999)] * weight
        eps = ((sample.double() - abar.sqrt() * self.x0) / (1 - abar).sqrt()).float()
        return SemanticUNet2DOutput(sample=torch.cat([eps, torch.zeros_like(eps)], dim=1))


@pytest.mark.parametrize("name", [n for n in SCHEDULERS if n not in REFUSED])
def test_every_scheduler_recovers_x0_from_an_oracle_epsilon(name):
    """Timesteps, input scaling and the split of the variance channels are right for every scheduler that samples."""
    pipe = GescoPipeline.from_unet_config("tiny", dataset="camvid")
    pipe.unet = OracleUNet(**pipe.unet.config)
    pipe.set_progress_bar_config(disable=True)
    if swap(pipe, name) is None:
        pytest.skip(f"{name} needs an optional dependency that is not installed")
    out = pipe(labels(batch=1), fds=False, num_inference_steps=8, guidance_scale=1.0, generator=gen(),
               output_type="pt").images
    error = (out - (OracleUNet.x0 / 2 + 0.5)).abs().max()
    assert error < (0.05 if name in ENDS_AT_ALPHA_BAR_0 else 1e-4), error


class GuidedOracleUNet(OracleUNet):
    """Predicts the exact noise for one image x0 under the map and for another under the null map (all zeros), so
    classifier-free guidance at scale s, ``eps_u + s (eps_c - eps_u)``, is the exact noise of
    ``x0_u + s (x0_c - x0_u)`` (eps is affine in x0 at a fixed ``x_t``)."""

    x0_null = torch.rand(1, 3, 16, 24, generator=gen(6)) * 0.4 - 0.2
    x0_map = x0_null + (torch.rand(1, 3, 16, 24, generator=gen(7)) * 0.5 - 0.25)

    def forward(self, sample, timestep, segmap, return_dict=True):
        maps = getattr(segmap, "segmap", segmap)  # a SemanticModulationCache holds the maps
        is_null = maps.flatten(1).abs().sum(1) == 0
        # With guidance the U-Net gets one noisy image and two maps per image ([null; map]): the shared encoder.
        samples = sample.repeat(maps.shape[0] // sample.shape[0], 1, 1, 1)
        t = float(timestep.reshape(-1)[0])
        low = int(t)
        weight = t - low
        abar = ALPHAS_CUMPROD[low] * (1 - weight) + ALPHAS_CUMPROD[min(low + 1, 999)] * weight
        x0 = torch.where(is_null[:, None, None, None], self.x0_null, self.x0_map).double()
        eps = ((samples.double() - abar.sqrt() * x0) / (1 - abar).sqrt()).float()
        return SemanticUNet2DOutput(sample=torch.cat([eps, torch.zeros_like(eps)], dim=1))


@pytest.mark.parametrize("name", [n for n in SCHEDULERS if n not in REFUSED])
def test_every_scheduler_samples_the_guided_image_from_a_guided_oracle(name):
    """Guided sampling (s = 2) per scheduler: the image is ``x0_u + s (x0_c - x0_u)``, neither the conditional nor
    the unconditional image, and the U-Net sees the null and the received map of each image in one call."""
    pipe = GescoPipeline.from_unet_config("tiny", dataset="camvid")
    pipe.unet = GuidedOracleUNet(**pipe.unet.config)
    pipe.set_progress_bar_config(disable=True)
    if swap(pipe, name) is None:
        pytest.skip(f"{name} needs an optional dependency that is not installed")
    calls = count_unet_calls(pipe)
    scale = 2.0
    out = pipe(labels(batch=1), fds=False, num_inference_steps=8, guidance_scale=scale, generator=gen(),
               output_type="pt").images
    guided = GuidedOracleUNet.x0_null + scale * (GuidedOracleUNet.x0_map - GuidedOracleUNet.x0_null)
    error = (out - (guided / 2 + 0.5)).abs().max()
    assert error < (0.05 if name in ENDS_AT_ALPHA_BAR_0 else 1e-4), error
    assert (out - (GuidedOracleUNet.x0_map / 2 + 0.5)).abs().max() > 0.1  # guidance moved it off the conditional image
    assert calls and set(calls) == {1}  # one noisy image per call; its two maps ride in the same forward


@pytest.mark.parametrize("name,channels", [
    ("DDPMScheduler", 6),  # ancestral step with the learned-range variance (variance_type copied from the config)
    ("DDPMParallelScheduler", 6),
    ("DPMSolverMultistepScheduler", 3),  # takes variance_type="learned_range" but only slices the channels off
    ("DDIMScheduler", 3),  # from_config copied variance_type into its config; its step never reads it
    ("EulerAncestralDiscreteScheduler", 3),
    ("UniPCMultistepScheduler", 3),
    ("LCMScheduler", 3),
])
def test_variance_channels_go_only_to_schedulers_whose_step_reads_them(pipe, name, channels):
    scheduler = swap(pipe, name)
    assert scheduler.config.variance_type == "learned_range"  # from_config copies the key into every config
    seen = []
    step = scheduler.step
    scheduler.step = lambda output, *args, **kwargs: seen.append(output.shape[1]) or step(output, *args, **kwargs)
    pipe(labels(), num_inference_steps=2, guidance_scale=2.0, generator=gen(), output_type="pt")
    assert set(seen) == {channels}
    assert scheduler_reads_learned_variance(scheduler) == (channels == 6)


def test_ddpm_without_learned_variance_takes_epsilon_only(pipe):
    pipe.scheduler = diffusers.DDPMScheduler.from_config(build_scheduler("ddim").config)  # default fixed_small
    assert pipe.scheduler.config.variance_type == "fixed_small" and not scheduler_reads_learned_variance(pipe.scheduler)
    assert torch.isfinite(pipe(labels(), num_inference_steps=2, generator=gen(), output_type="pt").images).all()


def test_learned_variance_scheduler_with_an_epsilon_only_unet_fails_before_sampling():
    pipe = GescoPipeline.from_unet_config("tiny", dataset="camvid", scheduler=build_scheduler("ddpm"))
    pipe.unet = SemanticUNet2DModel(**{**pipe.unet.config, "out_channels": 3})
    calls = count_unet_calls(pipe)
    with pytest.raises(ValueError, match="DDPMScheduler with variance_type='learned_range' reads a learned variance "
                                         "but the U-Net predicts 3 channels only"):
        pipe(labels(), num_inference_steps=2)
    assert calls == []


@pytest.mark.parametrize("scheduler,match", [
    (diffusers.DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction"),
     "DPMSolverMultistepScheduler is a flow-matching scheduler"),
    (diffusers.DDIMScheduler(prediction_type="v_prediction"),
     "DDIMScheduler is configured for prediction_type='v_prediction'; this U-Net predicts epsilon"),
    (diffusers.DDIMInverseScheduler(), "DDIMInverseScheduler inverts images into noise"),
    (diffusers.RePaintScheduler(), "RePaintScheduler.step needs original_image, mask"),
    (diffusers.CMStochasticIterativeScheduler(), "CMStochasticIterativeScheduler defines its own noise levels"),
    (object(), "object is not a diffusers scheduler"),
])
def test_schedulers_that_cannot_drive_the_model_are_named(scheduler, match):
    assert match in scheduler_incompatibility(scheduler)


def test_a_scheduler_that_rejects_the_step_count_fails_before_sampling(pipe):
    pipe.scheduler = diffusers.PNDMScheduler.from_config(pipe.scheduler.config)  # Runge-Kutta warm-up: >= 4 steps
    calls = count_unet_calls(pipe)
    with pytest.raises(ValueError, match="PNDMScheduler cannot run num_inference_steps=3: "):
        pipe(labels(), num_inference_steps=3)
    pipe.scheduler = diffusers.LCMScheduler.from_config(pipe.scheduler.config)  # at most original_inference_steps
    with pytest.raises(ValueError, match="LCMScheduler cannot run num_inference_steps=60: .* smaller than 50"):
        pipe(labels(), num_inference_steps=60)
    assert calls == []


def test_a_sample_predicting_student_needs_a_scheduler_configured_for_it():
    # A trajectory-distilled student stores what its output is; the pipeline checks the scheduler against it.
    student = GescoPipeline.from_unet_config("tiny", dataset="camvid", prediction_type="sample",
                                             scheduler=build_scheduler("ddim", prediction_type="sample"))
    assert student.model_prediction == "sample"
    images = student(labels(), num_inference_steps=2, generator=gen(), output_type="pt").images
    assert torch.isfinite(images).all()
    student.scheduler = build_scheduler("ddim")  # epsilon
    calls = count_unet_calls(student)
    with pytest.raises(ValueError, match="prediction_type='epsilon'; this U-Net predicts sample .*prediction_type='sample'"):
        student(labels(), num_inference_steps=2)
    assert calls == []
    with pytest.raises(ValueError, match="prediction_type.* must be 'epsilon' or 'sample'"):
        GescoPipeline.from_unet_config("tiny", dataset="camvid", prediction_type="v_prediction")

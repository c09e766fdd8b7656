"""The Gradio app of ``gesco demo`` and of the Hugging Face Space entry point (``app.py`` at the repository root).

Two tabs: **Transmit** (one map through the whole chain with a shipped model: photo, sent / received / FDS-cleaned
maps, generated image, BPP, map mIoU before and after FDS, timings) and **PSNR sweep** (map mIoU over a list of
channel levels with and without FDS, no diffusion model run). Everything runs offline on the models and sample maps
shipped in the package. The computations are :mod:`gesco_diffusers.demo.core`'s; bad input is shown as a
``gr.Error`` with one line.

    from gesco_diffusers.demo.app import build_demo
    build_demo().launch()
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable, Optional

try:
    import gradio as gr
except ImportError as err:  # the optional extra
    raise ImportError("the demo needs gradio: pip install 'gesco-diffusers[demo]'") from err
import pandas as pd  # a gradio dependency
import PIL.Image

from ..shipped import DEFAULT_MODEL
from . import core

__all__ = ["build_demo", "on_sweep", "on_transmit"]

#: Height in pixels the maps and images are shown at (CamVid's 64x80 maps scaled 3x, nearest neighbour).
DISPLAY_HEIGHT = 192

INTRO = """# GESCO: generative semantic communication
The sender transmits a **semantic label map** (one-hot, losslessly coded: BPP) over a noisy channel; the receiver
cleans it with **fast denoising semantic (FDS)** and a **semantic diffusion model** regenerates the image
(Grassucci et al., *Generative Semantic Communication: Diffusion Models Beyond Bit Recovery*, 2023). Runs offline on
the CamVid models shipped with `gesco-diffusers`: **demo** (40 guided sampling steps) and **fast** (its distilled
4-call student)."""


def _shown(image: Optional[PIL.Image.Image]) -> Optional[PIL.Image.Image]:
    """``image`` scaled to :data:`DISPLAY_HEIGHT` with nearest neighbour (map pixels stay visible as blocks)."""
    if image is None:
        return None
    width = max(1, round(image.width * DISPLAY_HEIGHT / image.height))
    return image.convert("RGB").resize((width, DISPLAY_HEIGHT), PIL.Image.NEAREST)


#: Bad input: shown to the user, no traceback in the server's log. Anything else is shown too, and logged in full.
_INPUT_ERRORS = (ValueError, TypeError, FileNotFoundError)
_QUIET = {"print_exception": False} if "print_exception" in inspect.signature(gr.Error).parameters else {}


def _one_line_errors(fn: Callable) -> Callable:
    """Run ``fn``; bad input (and any other failure) becomes a ``gr.Error`` with the first line of its message."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as err:  # noqa: BLE001 - the UI shows every failure in one line, never a traceback
            text = str(err).strip()
            quiet = _QUIET if isinstance(err, _INPUT_ERRORS) else {}
            raise gr.Error(text.splitlines()[0] if text else type(err).__name__, **quiet) from err

    return wrapper


@_one_line_errors
def on_transmit(sample, upload, model, channel, psnr_db, ebn0_db, modulation, fds, sampler, steps, seed,
                cache: Optional[core.PipelineCache] = None):
    """The Transmit button: ``(photo, sent, received, FDS, generated, summary)`` for the UI."""
    out = core.transmit_map(sample=sample, upload=upload, model=model, channel=channel, psnr_db=psnr_db,
                            ebn0_db=ebn0_db, modulation=modulation, fds=fds, sampler=sampler, steps=steps, seed=seed,
                            cache=cache)
    return (_shown(out.photo), _shown(out.sent), _shown(out.received), _shown(out.denoised), _shown(out.generated),
            out.summary())


@_one_line_errors
def on_sweep(sample, upload, model, channel, levels, modulation, seed):
    """The Sweep button: ``(plot data, table)`` for the UI."""
    rows = core.psnr_sweep(sample=sample, upload=upload, model=model, channel=channel, levels=levels,
                           modulation=modulation, seed=seed)
    frame = pd.DataFrame(rows).rename(columns={"level_db": "dB", "miou": "map mIoU"})
    table = frame.pivot(index="dB", columns="receiver", values="map mIoU").reset_index()
    table = table[["dB", *core.SWEEP_RECEIVERS.values()]].round(4)
    title = "Eb/N0 (dB)" if channel == "digital" else "PSNR (dB)"
    return gr.update(value=frame, x_title=title), table


def _level_inputs(channel: str):
    """Show the PSNR box for the analog channels, Eb/N0 and modulation for the digital link, neither without noise."""
    digital = channel == "digital"
    return (gr.update(visible=not digital and channel != core.NOISELESS), gr.update(visible=digital),
            gr.update(visible=digital))


def _sweep_inputs(channel: str):
    digital = channel == "digital"
    label = "Eb/N0 values (dB)" if digital else "PSNR values (dB)"
    return gr.update(label=label), gr.update(visible=digital)


def build_demo(model: str = DEFAULT_MODEL, device: Optional[str] = None) -> gr.Blocks:
    """The app. ``model``: the model selected at start, a shipped name (``demo``, ``fast``) or a pipeline folder
    (added to the choices); ``device``: where the pipelines run (default: CUDA when available). Models load on first
    use and stay loaded."""
    cache = core.PipelineCache(device)
    models = list(core.MODELS) + ([] if model in core.MODELS else [model])
    samples = core.sample_names()
    try:
        legend = core.legend_html(core.model_preset(model))
    except (OSError, ValueError):  # a model folder without a preset, or one that cannot be read yet: no legend
        legend = ""
    upload_label = ("or upload a label map (PNG of class ids, or colours of the dataset palette); it replaces the "
                    "sample")

    def transmit(*args):
        return on_transmit(*args, cache=cache)


    with gr.Blocks(title="GESCO demo", analytics_enabled=False) as demo:
        gr.Markdown(INTRO)
        with gr.Tab("Transmit", id="transmit"):
            with gr.Row():
                with gr.Column(scale=1, min_width=280):
                    sample = gr.Dropdown(samples, value=samples[0] if samples else None, label="shipped sample map",
                                         elem_id="transmit-sample")
                    upload = gr.File(label=upload_label, file_types=["image"], elem_id="transmit-upload")
                    model_choice = gr.Radio(models, value=model, label="model (fast: distilled, 4 U-Net calls)",
                                            elem_id="transmit-model")
                    channel = gr.Dropdown(list(core.CHANNELS), value="awgn", label="channel")
                    psnr = gr.Number(value=10.0, label="PSNR (dB)", elem_id="transmit-psnr")
                    ebn0 = gr.Number(value=6.0, label="Eb/N0 (dB)", visible=False)
                    modulation = gr.Dropdown(sorted(core.MODULATIONS), value="qpsk", label="modulation",
                                             visible=False)
                    fds = gr.Radio(list(core.FDS_METHODS), value="paper", label="FDS at the receiver")
                    sampler = gr.Dropdown(list(core.SAMPLER_CHOICES), value="default", label="sampler")
                    steps = gr.Slider(0, 100, value=0, step=1, label="sampling steps (0 = the model's own)",
                                      elem_id="transmit-steps")
                    seed = gr.Number(value=0, precision=0, label="seed", minimum=0)
                    run = gr.Button("Transmit and generate", variant="primary", elem_id="transmit-button")
                with gr.Column(scale=3):
                    with gr.Row():
                        photo = gr.Image(label="photo (sample only)", type="pil", format="png", interactive=False)
                        sent = gr.Image(label="sent map", type="pil", format="png", interactive=False)
                        received = gr.Image(label="received map", type="pil", format="png", interactive=False)
                    with gr.Row():
                        denoised = gr.Image(label="after FDS", type="pil", format="png", interactive=False)
                        generated = gr.Image(label="generated image", type="pil", format="png", interactive=False,
                                             elem_id="generated-image")
                    summary = gr.Markdown(elem_id="transmit-summary")
                    if legend:
                        gr.HTML(legend, label="classes")
            channel.change(_level_inputs, channel, [psnr, ebn0, modulation])
            run.click(transmit, [sample, upload, model_choice, channel, psnr, ebn0, modulation, fds, sampler, steps,
                                 seed], [photo, sent, received, denoised, generated, summary])

        with gr.Tab("PSNR sweep", id="sweep"):
            gr.Markdown("Map mIoU of one map over channel levels, without FDS and with the paper's and the adaptive "
                        "FDS (the same noise draw for all three). No diffusion model runs: this is fast.")
            with gr.Row():
                with gr.Column(scale=1, min_width=280):
                    sweep_sample = gr.Dropdown(samples, value=samples[0] if samples else None,
                                               label="shipped sample map")
                    sweep_upload = gr.File(label=upload_label, file_types=["image"])
                    sweep_model = gr.Radio(models, value=model,
                                           label="model (only its dataset, map size and PSNR convention are used)")
                    sweep_channel = gr.Dropdown(sorted(core.CHANNEL_REGISTRY), value="awgn", label="channel")
                    levels = gr.Textbox(value=", ".join(f"{v:g}" for v in core.DEFAULT_SWEEP),
                                        label="PSNR values (dB)", elem_id="sweep-levels")
                    sweep_modulation = gr.Dropdown(sorted(core.MODULATIONS), value="qpsk", label="modulation",
                                                   visible=False)
                    sweep_seed = gr.Number(value=0, precision=0, label="seed", minimum=0)
                    sweep = gr.Button("Sweep", variant="primary", elem_id="sweep-button")
                with gr.Column(scale=3):
                    plot = gr.LinePlot(x="dB", y="map mIoU", color="receiver", x_title="PSNR (dB)",
                                       y_lim=[0, 1], title="map mIoU vs channel level", elem_id="sweep-plot")
                    table = gr.Dataframe(label="map mIoU", interactive=False, elem_id="sweep-table")
            sweep_channel.change(_sweep_inputs, sweep_channel, [levels, sweep_modulation])
            sweep.click(on_sweep, [sweep_sample, sweep_upload, sweep_model, sweep_channel, levels, sweep_modulation,
                                   sweep_seed], [plot, table])
    return demo

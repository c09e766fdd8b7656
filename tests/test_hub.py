"""Model cards (hub_cards/ + gesco_diffusers.hub) and publishing, against a fake HfApi: no network anywhere."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard, metadata_load
from huggingface_hub.hf_api import DEFAULT_IGNORE_PATTERNS
from huggingface_hub.utils import filter_repo_objects

from gesco_diffusers import GescoPipeline, get_dataset_preset
from gesco_diffusers.hub import (
    CARD_KINDS,
    REQUIRED_TAGS,
    card_fields_from_folder,
    files_to_upload,
    main,
    publish_pipeline,
    render_model_card,
    validate_card_metadata,
    write_model_card,
)
from gesco_diffusers.pipelines.pipeline_gesco import TRAINING_STATE_PATTERNS

TRAINING_ARGS = {"learning_rate": 1e-4, "train_steps": 2000, "batch_size": 4, "drop_rate": 0.2,
                 "noise_psnr_db": [5, 10, 15, 20, 25, 30]}
KPIS = {"clean map": {"mIoU": 0.412, "FID": 88.5, "LPIPS": 0.51}, "AWGN 10 dB + FDS": {"mIoU": 0.35, "FID": None}}
PIPELINE_FILES = ["README.md", "model_index.json", "pipeline.py", "scheduler/scheduler_config.json", "unet/config.json",
                  "unet/diffusion_pytorch_model.safetensors", "unet/unet_semantic.py"]  # .py: DiffusionPipeline loading


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Tiny networks: intra-op threads only add contention on the shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def camvid_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pipe") / "camvid"
    GescoPipeline.from_unet_config("tiny", dataset="camvid", seed=0).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pipeline_fields(camvid_folder) -> dict:
    return card_fields_from_folder(camvid_folder)


# ---------------------------------------------------------------------------------------------------------------------
# Cards


@pytest.mark.parametrize("kind", ["cityscapes", "coco-stuff", "ade20k", "camvid"])
def test_trained_cards_render_with_valid_metadata(tmp_path, pipeline_fields, kind):
    fields = {**pipeline_fields, "dataset": kind}
    card = render_model_card(kind, training_args=TRAINING_ARGS, kpis=KPIS, repo_id="org/gesco-test", **fields)
    card.save(tmp_path / "README.md")
    preset = get_dataset_preset(kind)

    metadata = metadata_load(tmp_path / "README.md")  # what the Hub parses
    assert metadata["library_name"] == "diffusers" and metadata["pipeline_tag"] == "image-to-image"
    assert metadata["license"] == "apache-2.0" and metadata["datasets"] == [kind]
    assert set(REQUIRED_TAGS) | {kind} <= set(metadata["tags"])
    validate_card_metadata(tmp_path / "README.md")

    text = card.text
    class_rows = [line for line in text.splitlines() if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    assert [row.split("|")[2].strip() for row in class_rows] == list(preset.class_names)
    assert f"**C = {preset.map_channels}** map channels" in text
    assert "| `noise_psnr_db` | `[5, 10, 15, 20, 25, 30]` |" in text and "| `learning_rate` | `0.0001` |" in text
    assert "| clean map | 0.412 | 88.5 | 0.51 |" in text and "| AWGN 10 dB + FDS | 0.35 | – | – |" in text
    assert 'GescoPipeline.from_pretrained("org/gesco-test")' in text
    assert 'DiffusionPipeline.from_pretrained("org/gesco-test", trust_remote_code=True)' in text  # the Hub's snippet
    assert ("instance_map=instances" in text) == preset.use_instance_edges

    results = ModelCard.load(tmp_path / "README.md").data.eval_results
    assert [(r.metric_config, r.metric_type, r.metric_value) for r in results] == [
        ("clean map", "miou", 0.412), ("clean map", "fid", 88.5), ("clean map", "lpips", 0.51),
        ("AWGN 10 dB + FDS", "miou", 0.35)]


@pytest.mark.parametrize("source,license_id", [("GESCO", "mit"), ("SDM", "other")])
def test_converted_card_states_provenance_and_licence(pipeline_fields, source, license_id):
    conversion = dict(checkpoint_name="ema_0.9999_050000.pt", checkpoint_sha256="ab" * 32, source=source,
                      architecture="...", summary="Official UNetModel -> SemanticUNet2DModel", mapped_tensors=766,
                      model_tensors=830, mapped_parameters=653_984_518, dropped_tensors=102 if source == "GESCO" else 0,
                      dropped_parameters=20_722_688 if source == "GESCO" else 0, num_head_channels=64,
                      fp16_variant=True, variance_channels_trained=source == "SDM")
    card = render_model_card("converted", conversion=conversion, **{**pipeline_fields, "dataset": "cityscapes"})
    metadata = validate_card_metadata(card)
    assert metadata.license == license_id
    if license_id == "other":
        assert metadata.license_name and metadata.license_link.endswith("semantic-diffusion-model")
    assert "653,984,518 parameters" in card.text and "ab" * 32 in card.text
    assert ("102 tensors (20,722,688 parameters)" in card.text) == (source == "GESCO")
    assert 'build_scheduler("sde-dpmsolver++"' in card.text and card.data.eval_results is None
    assert ("weights are exactly zero" in card.text) == (source == "GESCO")
    assert ("guidance_scale=1.5" in card.text) == (source == "SDM")


def test_yaml_stays_valid_with_awkward_values(tmp_path, pipeline_fields):
    card = render_model_card("camvid", model_name='GESCO: "CamVid" #1', extra_tags=["a: b", "x#y"], **pipeline_fields)
    card.save(tmp_path / "README.md")
    metadata = metadata_load(tmp_path / "README.md")
    assert {"a: b", "x#y"} <= set(metadata["tags"])
    assert '\n# GESCO: "CamVid" #1\n' in card.text


def test_missing_fields_and_bad_values_are_errors(pipeline_fields):
    with pytest.raises(ValueError, match="'conversion' is undefined"):
        render_model_card("converted", **{**pipeline_fields, "dataset": "cityscapes"})
    with pytest.raises(ValueError, match="'pipeline' is undefined"):
        render_model_card("camvid")
    with pytest.raises(ValueError, match="needs the field 'dataset'"):
        render_model_card("converted", pipeline=pipeline_fields["pipeline"])
    with pytest.raises(ValueError, match="does not match the pipeline's dataset 'camvid'"):
        render_model_card("cityscapes", **pipeline_fields)
    with pytest.raises(ValueError, match="unknown model card kind"):
        render_model_card("mnist", **pipeline_fields)
    with pytest.raises(ValueError, match=r"kpis\['clean'\]\['FID'\] must be a finite number"):
        render_model_card("camvid", kpis={"clean": {"FID": float("nan")}}, **pipeline_fields)
    with pytest.raises(TypeError, match=r"kpis\['clean'\] must be a mapping"):
        render_model_card("camvid", kpis={"clean": 3.0}, **pipeline_fields)
    with pytest.raises(ValueError, match="license 'other' needs license_name"):
        render_model_card("camvid", license="other", **pipeline_fields)


def test_metadata_validation_lists_every_problem(tmp_path):
    metadata = "license: Apache 2\nlibrary_name: transformers\ntags:\n- gesco\n"
    (tmp_path / "README.md").write_text(f"---\n{metadata}---\n# x\n")
    with pytest.raises(ValueError) as err:
        validate_card_metadata(tmp_path / "README.md")
    message = str(err.value)
    for problem in ("library_name must be 'diffusers'", "pipeline_tag must be 'image-to-image'",
                    "lower-case Hub licence identifier", "datasets must be a non-empty list",
                    "tags lack ['semantic-communication', 'semantic-image-synthesis']"):
        assert problem in message
    (tmp_path / "README.md").write_text("# no metadata\n")
    with pytest.raises(ValueError, match="no YAML metadata"):
        validate_card_metadata(tmp_path / "README.md")


def test_card_fields_come_from_the_saved_folder(camvid_folder, pipeline_fields):
    pipeline = pipeline_fields["pipeline"]
    pipe = GescoPipeline.from_pretrained(camvid_folder)
    assert pipeline_fields["dataset"]["name"] == "camvid"
    assert pipeline["unet"]["num_parameters"] == sum(p.numel() for p in pipe.unet.parameters())
    assert pipeline["scheduler"]["class_name"] == type(pipe.scheduler).__name__
    assert pipeline["guidance_scale"] == 1.5 and pipeline["map_encoding"] == "one_hot"
    assert pipeline["fp16_variant"] is False and set(CARD_KINDS) >= {"camvid", "converted"}


# ---------------------------------------------------------------------------------------------------------------------
# Publishing


class FakeHfApi:
    """The ``HfApi`` boundary: records calls and copies uploads into a local "remote" folder per repository, with
    ``upload_folder``'s own filtering (the given patterns plus huggingface_hub's default ignores)."""

    def __init__(self, remote: Path):
        self.remote = remote
        self.calls: list[tuple[str, dict]] = []

    def create_repo(self, repo_id, *, token=None, private=None, exist_ok=False, repo_type=None, **kwargs):
        self.calls.append(("create_repo", dict(repo_id=repo_id, private=private, exist_ok=exist_ok,
                                               repo_type=repo_type)))
        path = self.remote / repo_id
        if path.exists() and not exist_ok:
            raise FileExistsError(repo_id)
        path.mkdir(parents=True, exist_ok=True)
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, commit_message=None, token=None, repo_type=None, revision=None,
                      allow_patterns=None, ignore_patterns=None, **kwargs):
        folder = Path(folder_path)
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        kept = list(filter_repo_objects(files, allow_patterns=allow_patterns,
                                        ignore_patterns=[*(ignore_patterns or []), *DEFAULT_IGNORE_PATTERNS]))
        self.calls.append(("upload_folder", dict(repo_id=repo_id, commit_message=commit_message,
                                                 ignore_patterns=ignore_patterns, files=kept)))
        for name in kept:
            (self.remote / repo_id / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(folder / name, self.remote / repo_id / name)
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/{'0' * 40}", oid="1" * 40)


def add_training_state(folder: Path) -> None:
    """What an Accelerate training run leaves next to the pipeline."""
    for name in ("checkpoint-500/unet/diffusion_pytorch_model.safetensors", "checkpoint-500/optimizer.bin",
                 "logs/events.out.tfevents.1", "opt000500.pt", ".git/config"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"training state")


def hf_cache_from_remote(remote_repo: Path, cache_dir: Path, repo_id: str, commit: str) -> set[str]:
    """Lay out what ``snapshot_download`` would store for the repo (``models--org--name/snapshots/<commit>`` and
    ``refs/main``), fetching what ``GescoPipeline.download`` asks for."""
    storage = cache_dir / f"models--{repo_id.replace('/', '--')}"
    files = sorted(p.relative_to(remote_repo).as_posix() for p in remote_repo.rglob("*") if p.is_file())
    fetched = set(filter_repo_objects(files, ignore_patterns=TRAINING_STATE_PATTERNS))
    for name in fetched:
        (storage / "snapshots" / commit / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(remote_repo / name, storage / "snapshots" / commit / name)
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / "main").write_text(commit)
    return fetched


def test_publish_uploads_the_pipeline_and_it_loads_back_from_the_cache(tmp_path, camvid_folder, monkeypatch):
    folder = tmp_path / "pipe"
    shutil.copytree(camvid_folder, folder)
    write_model_card(folder, training_args=TRAINING_ARGS, kpis=KPIS, repo_id="org/gesco-camvid")
    add_training_state(folder)
    api = FakeHfApi(tmp_path / "remote")

    info = publish_pipeline(folder, "org/gesco-camvid", private=True, commit_message="first", api=api)
    assert info.oid == "1" * 40
    assert [name for name, _ in api.calls] == ["create_repo", "upload_folder"]
    assert api.calls[0][1] == dict(repo_id="org/gesco-camvid", private=True, exist_ok=True, repo_type="model")
    upload = api.calls[1][1]
    assert upload["ignore_patterns"] == TRAINING_STATE_PATTERNS and upload["commit_message"] == "first"
    assert upload["files"] == PIPELINE_FILES == files_to_upload(folder)
    remote = tmp_path / "remote" / "org/gesco-camvid"
    assert sorted(p.relative_to(remote).as_posix() for p in remote.rglob("*") if p.is_file()) == PIPELINE_FILES

    cache = tmp_path / "cache"
    assert hf_cache_from_remote(remote, cache, "org/gesco-camvid", "2" * 40) == set(PIPELINE_FILES)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    pipe = GescoPipeline.from_pretrained("org/gesco-camvid", cache_dir=cache, local_files_only=True)
    original = GescoPipeline.from_pretrained(folder)
    for key, value in original.unet.state_dict().items():
        assert torch.equal(pipe.unet.state_dict()[key], value), key
    assert pipe.config.semantic_config == original.config.semantic_config
    labels = np.random.default_rng(0).integers(0, 12, size=(16, 16))
    images = pipe(labels, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (1, 16, 16, 3) and np.isfinite(images).all()


def test_publish_refuses_incomplete_folders(tmp_path, camvid_folder):
    api = FakeHfApi(tmp_path / "remote")
    folder = tmp_path / "pipe"
    shutil.copytree(camvid_folder, folder)
    with pytest.raises(FileNotFoundError, match="no model card"):
        publish_pipeline(folder, "org/name", api=api)
    with pytest.raises(FileNotFoundError, match="not a pipeline folder"):
        publish_pipeline(tmp_path, "org/name", api=api)
    write_model_card(folder)
    with pytest.raises(ValueError, match="namespace/name"):
        publish_pipeline(folder, "name-only", api=api)
    (folder / "README.md").write_text("---\nlicense: mit\n---\n")
    with pytest.raises(ValueError, match="invalid model card metadata"):
        publish_pipeline(folder, "org/name", api=api)
    assert api.calls == []


def test_publish_cli_writes_the_card_and_uploads(tmp_path, camvid_folder, capsys):
    folder = tmp_path / "pipe"
    shutil.copytree(camvid_folder, folder)
    add_training_state(folder)
    (tmp_path / "kpis.json").write_text(json.dumps(KPIS))
    (tmp_path / "args.json").write_text(json.dumps(TRAINING_ARGS))
    api = FakeHfApi(tmp_path / "remote")
    card_args = ["--kpis", str(tmp_path / "kpis.json"), "--training-args", str(tmp_path / "args.json")]

    assert main([str(folder), "org/cli", "--dry-run", *card_args], api=api) == 0
    printed = capsys.readouterr().out
    assert "| clean map | 0.412 | 88.5 | 0.51 |" in printed and api.calls == []
    assert printed.split("--- files that would be uploaded ---")[1].split() == PIPELINE_FILES
    assert not (folder / "README.md").exists()  # a dry run writes nothing

    assert main([str(folder), "org/cli", "--card-kind", "camvid"], api=api) == 0
    assert "uploaded" in capsys.readouterr().out
    assert api.calls[1][1]["files"] == PIPELINE_FILES
    with pytest.raises(FileNotFoundError, match="--kpis"):
        main([str(folder), "org/cli", "--kpis", str(tmp_path / "missing.json")], api=api)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


SECRET_ARGS = {**TRAINING_ARGS, "hub_token": "hf_" + "a" * 34, "wandb_api_key": "0123456789abcdef",
               "report": {"AWS_SECRET_ACCESS_KEY": "s3cr3t-value", "db_password": "hunter2"},
               "command": "train.py --push_to_hub --token hf_" + "b" * 34, "author": "kept", "keep_checkpoint": True}
LEAKS = ("a" * 34, "b" * 34, "0123456789abcdef", "s3cr3t-value", "hunter2")


def test_publish_never_writes_on_a_dry_run_never_replaces_a_card_unasked_and_never_leaks(tmp_path, camvid_folder,
                                                                                         capsys):
    folder = tmp_path / "pipe"
    shutil.copytree(camvid_folder, folder)
    (folder / "README.md").write_text("# My model\n\nHand-written notes that took an afternoon.\n")
    (tmp_path / "args.json").write_text(json.dumps(SECRET_ARGS))
    api = FakeHfApi(tmp_path / "remote")
    before = snapshot(folder)
    card_args = [str(folder), "org/x", "--training-args", str(tmp_path / "args.json")]

    assert main([*card_args, "--dry-run"], api=api) == 0
    printed = capsys.readouterr().out
    assert snapshot(folder) == before and api.calls == []
    assert "learning_rate" in printed and "[redacted]" in printed and "kept" in printed
    assert "refuses to replace it without --overwrite-card" in printed
    assert not any(leak in printed for leak in LEAKS)

    with pytest.raises(FileExistsError, match="--overwrite-card"):
        main(card_args, api=api)
    assert snapshot(folder) == before and api.calls == []

    from gesco_diffusers.cli import main as gesco_main

    assert gesco_main(["publish", *card_args]) == 1  # the command line reports it in one line
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "README.md' exists" in err

    assert main([*card_args, "--overwrite-card"], api=api) == 0
    card = (folder / "README.md").read_text()
    assert "Hand-written" not in card and "learning_rate" in card and "[redacted]" in card
    assert not any(leak in card for leak in LEAKS)
    remote_card = (tmp_path / "remote" / "org/x" / "README.md").read_text()
    assert remote_card == card


def test_redact_secrets_reaches_nested_values_and_keeps_ordinary_keys(pipeline_fields):
    from gesco_diffusers.hub import redact_secrets

    redacted = redact_secrets(SECRET_ARGS)
    assert redacted["hub_token"] == redacted["wandb_api_key"] == "[redacted]"
    assert redacted["report"] == {"AWS_SECRET_ACCESS_KEY": "[redacted]", "db_password": "[redacted]"}
    assert redacted["command"] == "train.py --push_to_hub --token [redacted]"
    assert {k: redacted[k] for k in (*TRAINING_ARGS, "author", "keep_checkpoint")} == \
        {**TRAINING_ARGS, "author": "kept", "keep_checkpoint": True}
    assert SECRET_ARGS["hub_token"].startswith("hf_a")  # the input is not modified
    assert redact_secrets({"token": None}) == {"token": None}
    for name in ("HF_TOKEN", "hfToken", "apiKey", "auth", "Authorization", "credentials_file", "private_key"):
        assert redact_secrets({name: "x"}) == {name: "[redacted]"}, name
    card = render_model_card("camvid", **pipeline_fields, training_args=SECRET_ARGS)
    assert not any(leak in str(card) for leak in LEAKS)

"""Sender: one-hot encoding, instance edges, present classes, the transmitted mask (Sec. III-A)."""

import numpy as np
import pytest
import torch

from gesco_diffusers.presets import get_dataset_preset
from gesco_diffusers.sender import (
    EncodedSemanticMap,
    SemanticEncoder,
    instance_edges,
    label_to_one_hot,
    present_classes,
)


def test_one_hot_matches_ids():
    labels = torch.tensor([[[0, 1], [2, 2]], [[3, 3], [3, 0]]])
    one_hot = label_to_one_hot(labels, 4)
    assert one_hot.shape == (2, 4, 2, 2) and one_hot.dtype == torch.float32
    assert torch.equal(one_hot.sum(1), torch.ones(2, 2, 2))
    assert torch.equal(one_hot.argmax(1), labels)
    assert one_hot[0, 2, 1, 0] == 1 and one_hot[0, 2, 0, 0] == 0


def test_accepts_numpy_and_single_maps():
    labels = np.array([[0, 1], [1, 2]], dtype=np.uint8)
    one_hot = label_to_one_hot(labels, 3)
    assert one_hot.shape == (1, 3, 2, 2)
    assert torch.equal(one_hot[0].argmax(0), torch.from_numpy(labels).long())
    assert present_classes(labels, 4).tolist() == [[True, True, True, False]]


def test_instance_edges_mark_both_pixels_of_each_differing_pair():
    instances = torch.tensor([[[5, 5, 5, 5], [5, 7, 7, 5], [5, 5, 5, 5]]])
    expected = torch.tensor([[[0, 1, 1, 0], [1, 1, 1, 1], [0, 1, 1, 0]]], dtype=torch.float32)
    assert torch.equal(instance_edges(instances), expected.unsqueeze(1))
    assert instance_edges(torch.zeros(2, 3, 3, dtype=torch.long)).sum() == 0


def test_present_classes_per_sample():
    labels = torch.tensor([[[0, 0], [0, 2]], [[1, 1], [1, 1]]])
    assert present_classes(labels, 3).tolist() == [[True, False, True], [False, True, False]]


def test_encoder_without_edges_transmits_present_classes():
    encoded = SemanticEncoder(4).encode(torch.tensor([[[0, 3], [3, 3]]]))
    assert isinstance(encoded, EncodedSemanticMap)
    assert encoded.one_hot.shape == (1, 4, 2, 2)
    assert encoded.transmitted.tolist() == [[True, False, False, True]]


def test_encoder_with_edges_appends_edge_channel_last_and_always_sends_it():
    labels = torch.tensor([[[0, 0, 1], [0, 0, 1]]])
    instances = torch.tensor([[[1, 1, 1], [1, 1, 1]]])  # one instance: the edge plane is all zeros, still sent
    encoded = SemanticEncoder(3, use_instance_edges=True).encode(labels, instances)
    assert encoded.one_hot.shape == (1, 4, 2, 3)
    assert encoded.transmitted.tolist() == [[True, True, False, True]]
    assert encoded.one_hot[:, 3].sum() == 0
    other = SemanticEncoder(3, use_instance_edges=True).encode(labels, labels)
    assert torch.equal(other.one_hot[:, 3:], instance_edges(labels))


def test_encoder_from_preset():
    cityscapes = SemanticEncoder.from_preset("cityscapes")
    assert (cityscapes.num_classes, cityscapes.use_instance_edges, cityscapes.map_channels) == (35, True, 36)
    camvid = SemanticEncoder.from_preset(get_dataset_preset("camvid"))
    assert camvid.map_channels == 12 and not camvid.use_instance_edges


def test_ids_out_of_range_name_the_id_and_count():
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, 0, :3] = 255
    with pytest.raises(ValueError, match=r"id 255 \(3 pixels\)"):
        label_to_one_hot(labels, 183)
    with pytest.raises(ValueError, match=r"id -1 \(1 pixels\)"):
        SemanticEncoder(4).encode(torch.tensor([[-1, 0], [0, 0]]))


@pytest.mark.parametrize("bad", [torch.zeros(1, 2, 2), np.zeros((2, 2), dtype=np.float32)])
def test_float_labels_rejected(bad):
    with pytest.raises(TypeError, match="integer"):
        label_to_one_hot(bad, 3)


def test_bad_shapes_rejected():
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        label_to_one_hot(torch.zeros(1, 1, 2, 2, dtype=torch.long), 3)
    encoder = SemanticEncoder(3, use_instance_edges=True)
    with pytest.raises(ValueError, match="same shape"):
        encoder.encode(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 3, dtype=torch.long))


def test_instances_required_iff_edges_used():
    labels = torch.zeros(1, 2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="pass instances"):
        SemanticEncoder(3, use_instance_edges=True).encode(labels)
    with pytest.raises(ValueError, match="use_instance_edges=False"):
        SemanticEncoder(3).encode(labels, labels)

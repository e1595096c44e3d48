"""DenseNet-121 matches torchvision's architecture and key names (so checkpoints load strictly)."""

from __future__ import annotations

import torch

from inference.pack_builder.densenet import ChexnetExportWrapper, densenet121

TORCHVISION_PARAMS_1000 = 7_978_856  # torchvision.models.densenet121().parameters()


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_count_matches_torchvision() -> None:
    assert _count(densenet121(1000)) == TORCHVISION_PARAMS_1000


def test_fourteen_class_head_changes_only_the_classifier() -> None:
    # 1024 inputs (+1 bias) per class: swapping 1000 classes for 14 removes 986 * 1025 parameters.
    assert _count(densenet121(14)) == TORCHVISION_PARAMS_1000 - (1000 - 14) * 1025
    assert tuple(densenet121(14).classifier.weight.shape) == (14, 1024)


def test_state_dict_uses_torchvision_names() -> None:
    keys = set(densenet121(14).state_dict())
    assert len(keys) == 727  # 58 dense layers x 12 + 3 transitions x 6 + stem/norm5/classifier 13
    for key in (
        "features.conv0.weight",
        "features.norm0.running_var",
        "features.denseblock1.denselayer1.norm1.weight",
        "features.denseblock1.denselayer6.conv2.weight",
        "features.denseblock3.denselayer24.norm2.num_batches_tracked",
        "features.denseblock4.denselayer16.conv1.weight",
        "features.transition1.norm.weight",
        "features.transition3.conv.weight",
        "features.norm5.bias",
        "classifier.weight",
        "classifier.bias",
    ):
        assert key in keys, key
    assert "features.denseblock4.denselayer17.conv1.weight" not in keys
    # Channel bookkeeping: block 4 starts at 512 and ends at 512 + 16 * 32 = 1024.
    sd = densenet121(14).state_dict()
    assert tuple(sd["features.denseblock4.denselayer1.norm1.weight"].shape) == (512,)
    assert tuple(sd["features.norm5.weight"].shape) == (1024,)


def test_export_wrapper_returns_probabilities_and_feature_map() -> None:
    torch.manual_seed(3)
    net = densenet121(14).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        probs, feats = ChexnetExportWrapper(net)(x)
        logits = net(x)
    assert tuple(feats.shape) == (1, 1024, 7, 7)
    assert float(feats.min()) >= 0.0  # after the final ReLU
    torch.testing.assert_close(probs, torch.sigmoid(logits))
    # The classifier sees the spatial mean of the feature map: the basis of the CAM.
    cam = torch.einsum("ck,khw->chw", net.classifier.weight, feats[0])
    torch.testing.assert_close(cam.mean(dim=(1, 2)) + net.classifier.bias, logits[0], rtol=1e-4, atol=1e-4)

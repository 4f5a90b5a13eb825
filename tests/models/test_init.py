"""``model.init``: weights on disk in other layouts load into medcl's encoder with its function.

The reference networks are written here, independently of MONAI: a ResNet with torchvision's
module names and forward (7×7 stride-2 stem, max-pool, basic blocks with a bias-free 1×1
shortcut, global average pooling, ``fc``), in 2-D with three input channels (a torchvision/timm
ResNet-18) and in 3-D with one (MedicalNet's names, under ``module.`` in ``state_dict``). Their
batch-norm statistics and affine parameters are randomised, so that a wrongly mapped tensor shows
in the features. A grey image ``x`` through the loaded encoder must give what the reference gives
for ``x`` repeated over its input channels.
"""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from medcl.cli.main import main
from medcl.config import load_config
from medcl.data.manifest import read_manifest
from medcl.errors import ConfigError
from medcl.evaluate.card import model_card
from medcl.evaluate.finetune import finetune
from medcl.models.description import EncoderDescription, ModelDescription
from medcl.models.encoders import EncoderSpec, build_encoder
from medcl.models.export import save_encoder
from medcl.models.init import init_file, load_init
from medcl.train.module import PretrainModule
from medcl.train.pretrain import pretrain
from medcl.transforms import build_preset
from tests.conftest import TINY_OVERRIDES

_LAYERS = {
    2: (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d),
    3: (nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d),
}


class Block(nn.Module):
    """torchvision's BasicBlock: conv-bn-relu-conv-bn, plus the (projected) input, relu."""

    def __init__(self, cin: int, cout: int, stride: int, dims: int) -> None:
        super().__init__()
        conv, bn, _ = _LAYERS[dims]
        self.conv1 = conv(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = bn(cout)
        self.relu = nn.ReLU()
        self.conv2 = conv(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = bn(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(conv(cin, cout, 1, stride, bias=False), bn(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + shortcut)


class ReferenceResNet(nn.Module):
    """A ResNet in torchvision's layout; :meth:`features` is the pooled input of ``fc``."""

    def __init__(self, layers, widths, in_channels: int, dims: int = 2) -> None:
        super().__init__()
        conv, bn, pool = _LAYERS[dims]
        self.conv1 = conv(in_channels, widths[0], 7, 2, 3, bias=False)
        self.bn1 = bn(widths[0])
        self.relu = nn.ReLU()
        self.maxpool = pool(3, 2, 1)
        cin = widths[0]
        for i, (n, w) in enumerate(zip(layers, widths, strict=True)):
            blocks = [
                Block(cin if j == 0 else w, w, 2 if (i and j == 0) else 1, dims) for j in range(n)
            ]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = w
        self.fc = nn.Linear(cin, 10)
        torch.manual_seed(7)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d | nn.BatchNorm3d):
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        self.eval()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return x.flatten(2).mean(2)


def torchvision_resnet18() -> ReferenceResNet:
    return ReferenceResNet((2, 2, 2, 2), (64, 128, 256, 512), in_channels=3)


def medicalnet_resnet10() -> ReferenceResNet:
    return ReferenceResNet((1, 1, 1, 1), (16, 32, 64, 128), in_channels=1, dims=3)


def _encoder(name="resnet18", dims=2, stem="standard", width=1.0) -> nn.Module:
    return build_encoder(EncoderSpec(name, dims, 224, stem=stem, width=width)).eval()


def _same_features(encoder: nn.Module, ref: ReferenceResNet, x: torch.Tensor) -> None:
    channels = ref.conv1.in_channels
    with torch.no_grad():
        expected = ref.features(x.expand(-1, channels, *x.shape[2:]))
        got = encoder(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def resnet18():
    return torchvision_resnet18()


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_torchvision_resnet18_loads_with_equal_features(resnet18, tmp_path, fmt):
    path = tmp_path / f"resnet18.{fmt}"
    state = resnet18.state_dict()
    if fmt == "pth":
        torch.save(state, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    encoder = _encoder()
    report = load_init(encoder, path)
    assert report.missing == [] and report.unexpected == []  # 0 missing backbone keys
    assert report.ignored == ["fc.bias", "fc.weight"] and report.prefix == ""
    assert report.loaded == report.total == len(encoder.state_dict())
    assert report.notes == [
        "conv1 summed over its 3 input channels",
        "3 shortcut convolution biases set to 0 (none in the file)",
    ]
    _same_features(encoder, resnet18, torch.randn(2, 1, 64, 64))


def test_medicalnet_layout_loads_with_equal_features(tmp_path):
    ref = medicalnet_resnet10()
    blob = {"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}, "epoch": 3}
    blob["state_dict"]["module.conv_seg.0.weight"] = torch.zeros(2, 128, 1, 1, 1)  # its head
    torch.save(blob, tmp_path / "resnet_10.pth")
    encoder = _encoder("resnet10", dims=3, width=0.25)
    report = load_init(encoder, tmp_path / "resnet_10.pth")
    assert report.prefix == "state_dict.module." and report.missing == []
    assert "state_dict.module.conv_seg.0.weight" in report.ignored
    _same_features(encoder, ref, torch.randn(2, 1, 24, 24, 24))


def test_monai_bundle_and_medcl_folders(resnet18, tmp_path):
    source = _encoder()
    load_init(source, _saved(resnet18, tmp_path / "tv.pth"))
    state = source.state_dict()
    # a MONAI bundle exported by medcl: encoder.* and head.* in models/model.pt
    bundle = tmp_path / "bundle"
    (bundle / "models").mkdir(parents=True)
    head = {"head.weight": torch.zeros(3, 512), "head.bias": torch.zeros(3)}
    torch.save(
        {**{f"encoder.{k}": v for k, v in state.items()}, **head}, bundle / "models/model.pt"
    )
    # a medcl pretraining run (encoder.pt) and a model folder (weights.pt)
    run = tmp_path / "run"
    save_encoder(run / "encoder.pt", source, EncoderDescription(source.spec))
    model = tmp_path / "finetune" / "model"
    model.mkdir(parents=True)
    torch.save({"encoder": state, "head": {"type": "linear", **head}}, model / "weights.pt")
    for where, prefix in [(bundle, "encoder."), (run, "state_dict."), (model.parent, "encoder.")]:
        encoder = _encoder()
        report = load_init(encoder, where)
        assert report.prefix == prefix and report.missing == report.unexpected == [], where
        assert report.notes == []  # already one channel, biases present
        for k, v in encoder.state_dict().items():
            assert torch.equal(v, state[k]), (where, k)
        _same_features(encoder, resnet18, torch.randn(1, 1, 64, 64))


def _saved(net: nn.Module, path):
    torch.save(net.state_dict(), path)
    return path


def test_shape_mismatch_is_refused_with_the_key_and_the_setting(resnet18, tmp_path):
    path = _saved(resnet18, tmp_path / "tv.pth")
    cases = [
        (_encoder(stem="small"), "conv1.weight has shape (64, 3, 7, 7) in the file, (64, 1, 3, 3)"),
        (build_encoder(EncoderSpec("resnet18", 2, 64)), "set model.stem=standard"),  # auto: small
        (_encoder(width=0.5), "conv1.weight has shape (64, 3, 7, 7) in the file, (32, 1, 7, 7)"),
        (_encoder("resnet50"), "layer1.0.conv1.weight has shape (64, 64, 3, 3) in the file"),
        (_encoder(dims=3), "the file's network is 2-D, this encoder 3-D"),
    ]
    for encoder, message in cases:
        with pytest.raises(ConfigError) as info:
            load_init(encoder, path)
        assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_missing_and_unexpected_keys_in_one_warning(resnet18, tmp_path, caplog):
    state = {k: v for k, v in resnet18.state_dict().items() if not k.startswith("layer4.1.")}
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "partial.pth")
    encoder, fresh = _encoder(), _encoder()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    with caplog.at_level(logging.INFO, logger="medcl.models.init"):
        report = load_init(encoder, tmp_path / "partial.pth")
    expected = [k for k in fresh.state_dict() if k.startswith("layer4.1.")]
    assert report.missing == expected and report.unexpected == ["layer5.0.conv1.weight"]
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and "\n" not in record.message
    assert f"missing {len(expected)} ({', '.join(expected[:3])}, +{len(expected) - 3} more)" in (
        record.message
    )
    assert "unexpected 1 (layer5.0.conv1.weight)" in record.message
    for k in expected:  # a missing tensor keeps its start
        assert torch.equal(encoder.state_dict()[k], before[k])


def test_files_that_are_not_weights_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="no such file or folder"):
        init_file(tmp_path / "none.pth")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="folder without weights"):
        init_file(tmp_path / "empty")
    torch.save(nn.Linear(2, 2), tmp_path / "module.pt")  # a pickled module is not executed
    with pytest.raises(ConfigError, match="not a weights file"):
        load_init(_encoder("resnet10"), tmp_path / "module.pt")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="no ResNet backbone"):
        load_init(_encoder("resnet10"), tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="model.init: a path"):
        load_config(None, ["model.init="])


# the stages that start from it ---------------------------------------------------------------


def _tiny_file(tmp_path):
    """Weights for the tiny test encoder (resnet10, width 1/8, 16 px: the small stem)."""
    source = build_encoder(EncoderSpec("resnet10", 2, 16, width=0.125))
    for p in source.parameters():
        p.data.normal_()
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, tmp_path / "w.pth")
    return source.state_dict(), tmp_path / "w.pth"


def test_pretraining_and_fine_tuning_from_scratch_start_from_it(tiny_manifest, tmp_path):
    state, path = _tiny_file(tmp_path)
    cfg = load_config(None, [*TINY_OVERRIDES, f"model.init={path}", "finetune.mode=linear"])
    module = PretrainModule(cfg, build_preset("mr", {}, dims=2), spatial_dims=2, n_classes=3)
    for k, v in module.encoder.state_dict().items():
        assert torch.equal(v, state[k]), k
    res = finetune(cfg, read_manifest(tiny_manifest))  # a linear probe keeps the encoder
    for k, v in res.model.encoder.state_dict().items():
        assert torch.equal(v.cpu(), state[k]), k
    description = res.model.description
    assert description.init == "w.pth" and description.pretraining is None
    assert ModelDescription.from_dict(description.to_dict()).init == "w.pth"
    assert "started from the weights in w.pth (model.init)" in model_card(description)


def test_a_missing_file_is_refused_before_any_work(tmp_path, capsys):
    missing = f"model.init={tmp_path / 'nothing.pth'}"
    never = f"data.manifest={tmp_path / 'not-read.csv'}"
    with pytest.raises(ConfigError, match="model.init: .*nothing.pth: no such file"):
        pretrain(load_config(None, [*TINY_OVERRIDES, missing, never, f"out={tmp_path}/r"]))
    assert main(["efficiency", missing, never, f"out={tmp_path}/e"]) == 2
    assert "nothing.pth: no such file or folder" in capsys.readouterr().err
    assert not (tmp_path / "r").exists() and not (tmp_path / "e").exists()

"""Classifiers and attacker networks built by name: output shapes, unknown names."""
import pytest
import torch

from advgame import UserError
from advgame.models import build_attacker, build_classifier, classifier_meta

SHAPES = [(1, 28, 28), (3, 32, 32)]


@pytest.mark.parametrize("arch, shape", [("smallcnn", (1, 28, 28)), ("cifarcnn", (3, 32, 32)),
                                         ("smallcnn", (3, 32, 32)), ("cifarcnn", (1, 28, 28)),
                                         ("resnet18", (3, 32, 32))])
def test_classifier_logits_shape(arch, shape):
    m = build_classifier(arch, shape[0], 10, shape[1])
    assert m(torch.rand(2, *shape)).shape == (2, 10)
    assert build_classifier(arch, shape[0], 7, shape[1])(torch.rand(3, *shape)).shape == (3, 7)


def test_smallcnn_is_the_trades_architecture():
    m = build_classifier("smallcnn")
    convs = [l.out_channels for l in m.modules() if isinstance(l, torch.nn.Conv2d)]
    fcs = [l.out_features for l in m.modules() if isinstance(l, torch.nn.Linear)]
    assert convs == [32, 32, 64, 64] and fcs == [200, 200, 10]


@pytest.mark.parametrize("arch", ["mlp", "conv", "unet"])
@pytest.mark.parametrize("shape", SHAPES)
def test_attacker_output_has_input_shape(arch, shape):
    torch.manual_seed(0)
    h = build_attacker(arch, shape, hidden=16, width=4)
    x = torch.rand(2, *shape)
    out = h(x)
    assert out.shape == x.shape
    out.sum().backward()
    assert all(p.grad is not None for p in h.parameters())


def test_mlp_attacker_is_the_papers_three_hidden_layers():
    h = build_attacker("mlp", (1, 28, 28), hidden=300)
    fcs = [l.out_features for l in h.modules() if isinstance(l, torch.nn.Linear)]
    assert fcs == [300, 300, 300, 784]


def test_unknown_classifier_arch():
    with pytest.raises(UserError, match="smallcnn"):
        build_classifier("vgg")


def test_unknown_attacker_arch():
    with pytest.raises(UserError, match="mlp, conv, unet"):
        build_attacker("gan", (1, 28, 28))


def test_classifier_meta_from_batch_shape():
    meta = classifier_meta("cifarcnn", (50, 3, 32, 32), 10, defender="baseline")
    assert meta == {"kind": "classifier", "arch": "cifarcnn", "in_channels": 3, "classes": 10,
                    "side": 32, "defender": "baseline"}

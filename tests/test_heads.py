"""Margin heads: the margin touches only the target logit; ArcFace at margin 0 is scaled softmax."""
import math

import torch
import torch.nn.functional as F

from guie.model.heads import ArcFaceHead, SubCenterArcFaceHead, build_head


def test_margin_touches_only_target_logit():
    torch.manual_seed(0)
    head = ArcFaceHead(16, 10, scale=30.0, margin=0.5)
    x = torch.randn(8, 16)
    y = torch.randint(0, 10, (8,))
    logits = head(x, y)
    plain = head.cosine(x) * 30.0
    target = F.one_hot(y, 10).bool()
    assert torch.allclose(logits[~target], plain[~target])
    assert (logits[target] < plain[target]).all()  # the margin makes the target harder


def test_arcface_target_is_cos_theta_plus_m():
    head = ArcFaceHead(4, 3, scale=10.0, margin=0.3)
    x = torch.randn(5, 4)
    y = torch.tensor([0, 1, 2, 0, 1])
    cos = head.cosine(x).gather(1, y.view(-1, 1)).squeeze(1)
    theta = torch.acos(cos.clamp(-1, 1))
    expected = torch.where(theta + 0.3 < math.pi, torch.cos(theta + 0.3), cos - math.sin(math.pi - 0.3) * 0.3)
    got = head(x, y).gather(1, y.view(-1, 1)).squeeze(1) / 10.0
    assert torch.allclose(got, expected, atol=1e-5)


def test_arcface_margin_zero_is_scaled_softmax():
    head = ArcFaceHead(16, 7, scale=20.0, margin=0.0)
    x = torch.randn(6, 16)
    y = torch.randint(0, 7, (6,))
    cos = F.normalize(x) @ F.normalize(head.weight).T
    assert torch.allclose(head(x, y), 20.0 * cos, atol=1e-6)
    assert torch.allclose(F.cross_entropy(head(x, y), y), F.cross_entropy(20.0 * cos, y), atol=1e-6)


def test_subcenter_takes_closest_centre():
    head = SubCenterArcFaceHead(8, 4, scale=1.0, margin=0.0, subcenters=3)
    x = torch.randn(5, 8)
    full = F.normalize(x) @ F.normalize(head.weight).T
    assert torch.allclose(head.cosine(x), full.view(5, 4, 3).amax(2), atol=1e-6)
    assert head.weight.shape == (12, 8)


def test_margin_gradient_flows_to_projection_and_centres():
    head = build_head("arcface", 8, 5, 30.0, 0.3, 1)
    x = torch.randn(4, 8, requires_grad=True)
    F.cross_entropy(head(x, torch.tensor([0, 1, 2, 3])), torch.tensor([0, 1, 2, 3])).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert head.weight.grad.abs().sum() > 0

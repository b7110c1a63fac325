import pytest
import torch

from companion import data, models, train, transfer
from companion.errors import CheckpointError


def _grads(model):
    return {n: p.grad for n, p in model.named_parameters()}


def test_freeze_blocks_gradients_exactly_where_frozen():
    model = models.create("efficientnet_lite0", num_classes=4)
    transfer.freeze_stages(model, "efficientnet_lite0", trainable_last=1)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    for name, grad in _grads(model).items():
        trainable = name.startswith(("blocks.6", "conv_head", "bn2", "classifier"))
        assert (grad is not None) == trainable, name
    assert transfer.trainable_parameters(model) < models.count_parameters(model)


def test_freeze_all_but_head_counts():
    model = models.create("resnet18", num_classes=5)
    transfer.freeze(model, except_=("fc",))
    assert transfer.trainable_parameters(model) == 512 * 5 + 5
    transfer.unfreeze(model, ["layer4"])
    assert transfer.trainable_parameters(model) > 512 * 5 + 5


def test_discriminative_groups_decrease_with_depth():
    model = models.create("efficientnet_lite0", num_classes=3)
    groups = transfer.discriminative_param_groups(model, "efficientnet_lite0", lr=1e-2, decay=0.5)
    assert groups[0]["stage"] == "head" and groups[0]["lr"] == 1e-2
    lrs = [g["lr"] for g in groups]
    assert lrs == sorted(lrs, reverse=True) and len(groups) == 1 + len(models.stages("efficientnet_lite0"))
    n = sum(p.numel() for g in groups for p in g["params"])
    assert n == models.count_parameters(model)  # every parameter in exactly one group


def test_gradual_unfreezer_adds_stages_to_the_optimizer():
    model = models.create("simple_cnn", num_classes=3)
    transfer.freeze_stages(model, "simple_cnn", 0)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    step = transfer.gradual_unfreezer("simple_cnn", lr=0.1)
    counts = [transfer.trainable_parameters(model)]
    for epoch in range(3):
        step(epoch, model, opt)
        counts.append(transfer.trainable_parameters(model))
    assert counts == sorted(counts) and len(set(counts)) == 4
    assert len(opt.param_groups) == 4 and counts[-1] == models.count_parameters(model)


def test_cached_features_are_reused_and_invalidated(tmp_path, fashion_small):
    train_set, _ = fashion_small
    subset = data.balanced_subset(train_set, 2)
    backbone = models.create("simple_cnn", num_classes=0, in_channels=1)
    prep = data.BatchTransform(28, (0.5,), (0.5,), channels=1)
    f1, y1 = transfer.cached_features(backbone, subset, preprocess=prep, cache_dir=tmp_path)
    assert f1.shape == (20, 128) and len(list(tmp_path.glob("*.pt"))) == 1
    transfer._MEMORY_CACHE.clear()
    f2, _ = transfer.cached_features(backbone, subset, preprocess=prep, cache_dir=tmp_path)
    assert torch.equal(f1, f2) and len(list(tmp_path.glob("*.pt"))) == 1  # read back from disk
    # another subset, other weights, another transform: never the stale entry
    other = data.balanced_subset(train_set, 2, seed=9)
    transfer.cached_features(backbone, other, preprocess=prep, cache_dir=tmp_path)
    with torch.no_grad():
        backbone.features[0].weight.mul_(2)
    f3, _ = transfer.cached_features(backbone, subset, preprocess=prep, cache_dir=tmp_path)
    transfer.cached_features(backbone, subset, preprocess=data.BatchTransform(32, (0.5,), (0.5,), channels=1), cache_dir=tmp_path)
    assert not torch.equal(f1, f3) and len(list(tmp_path.glob("*.pt"))) == 4


def test_extract_features_leaves_batchnorm_alone(fashion_small):
    backbone = models.create("simple_cnn", num_classes=0, in_channels=1)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    backbone.train()
    feats, labels = transfer.extract_features(
        backbone, data.make_loader(fashion_small[0], 64), preprocess=data.BatchTransform(28, (0.5,), (0.5,), channels=1)
    )
    assert feats.shape == (200, 128) and labels.shape == (200,)
    assert all(torch.equal(v, backbone.state_dict()[k]) for k, v in before.items())


def test_multi_depth_features_concatenate():
    model = models.create("resnet18", num_classes=0).eval()
    fused = transfer.MultiDepthFeatures(model, ["layer2", "layer3", "layer4"])
    with torch.no_grad():
        assert fused(torch.randn(2, 3, 64, 64)).shape == (2, 128 + 256 + 512)


def test_reinitialize_stages_keeps_early_weights_only():
    pretrained = models.create("efficientnet_lite0", pretrained=True, num_classes=4)
    reference = {k: v.clone() for k, v in pretrained.state_dict().items()}
    transfer.reinitialize_stages(pretrained, "efficientnet_lite0", keep_first=3)
    state = pretrained.state_dict()
    assert torch.equal(state["conv_stem.weight"], reference["conv_stem.weight"])
    assert torch.equal(state["blocks.2.0.conv_pw.weight"], reference["blocks.2.0.conv_pw.weight"])
    assert not torch.equal(state["blocks.4.0.conv_pw.weight"], reference["blocks.4.0.conv_pw.weight"])
    assert not torch.equal(state["conv_head.weight"], reference["conv_head.weight"])


def test_transferable_state_leaves_out_head_and_mismatches():
    source = models.create("simple_cnn", num_classes=6).state_dict()
    target = models.create("simple_cnn", num_classes=4)
    state = transfer.transferable_state(source, target, exclude=("classifier",))
    assert not any(k.startswith("classifier") for k in state)
    assert len(state) == len(source) - 2
    target.load_state_dict(state, strict=False)
    assert torch.equal(target.features[0].weight, source["features.0.weight"])
    with pytest.raises(CheckpointError, match="class-count mismatch: the checkpoint has 6 classes, the model 4"):
        train.load_weights(target, source)  # the 6-class head does not fit a 4-class model


def test_multitask_net_trains_both_heads_through_fit(fashion_small):
    train_set, test_set = fashion_small
    group = torch.tensor([0, 1, 0, 0, 0, 2, 0, 2, 3, 2])  # tops, trousers, footwear, bags
    labels = torch.stack([train_set.labels, group[train_set.labels]], 1)
    test_labels = torch.stack([test_set.labels, group[test_set.labels]], 1)
    torch.manual_seed(0)
    net = transfer.MultiTaskNet(models.create("simple_cnn", num_classes=0, in_channels=1), models.spec("simple_cnn").feature_dim,
                                 {"category": 10, "group": 4})
    prep = data.BatchTransform(28, (0.5,), (0.5,), channels=1)
    before = {t: h.weight.detach().clone() for t, h in net.heads.items()}
    loader = data.ArrayLoader(train_set.images, labels, 50, shuffle=True)
    history = train.fit(net, loader, data.ArrayLoader(test_set.images, test_labels, 100), epochs=3, lr=3e-3,
                        preprocess=prep, loss_fn=net.loss, correct_fn=net.correct, verbose=False, device="cpu")
    assert all(not torch.equal(before[t], h.weight) for t, h in net.heads.items())  # both heads learned
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    acc = net.task_accuracy(data.ArrayLoader(test_set.images, test_labels, 100), preprocess=prep)
    assert acc["group"] > 0.4 and acc["category"] > 0.2  # chance: 0.25 (most frequent group 0.5) and 0.1
    assert 0 <= history[-1]["val_accuracy"] <= min(acc.values())  # all tasks right <= each task right


def test_multitask_net_rejects_single_task_labels():
    net = transfer.MultiTaskNet(torch.nn.Flatten(), 12, {"a": 3, "b": 2})
    logits = net(torch.randn(4, 3, 2, 2))
    assert logits.shape == (4, 5)
    with pytest.raises(ValueError, match=r"labels of shape \(B, 2\)"):
        net.loss(logits, torch.zeros(4, dtype=torch.long))
    expected = torch.nn.functional.cross_entropy(logits[:, :3], torch.zeros(4, dtype=torch.long)) + \
        torch.nn.functional.cross_entropy(logits[:, 3:], torch.ones(4, dtype=torch.long))
    assert torch.allclose(net.loss(logits, torch.tensor([[0, 1]] * 4)), expected)


def test_load_probe_head_puts_the_trained_layer_in_the_model():
    probe = transfer.linear_probe(models.spec("resnet18").feature_dim, 3)
    model = transfer.load_probe_head(models.create("resnet18", num_classes=3), "resnet18", probe)
    assert torch.equal(model.fc.weight, probe[-1].weight) and torch.equal(model.fc.bias, probe[-1].bias)
    with pytest.raises(RuntimeError, match="size mismatch"):
        transfer.load_probe_head(models.create("resnet18", num_classes=4), "resnet18", probe)

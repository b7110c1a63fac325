import pytest
import torch
import torch.nn.functional as nn_f
from marks import real_data

from companion import batch_transforms, data, files, inference, loaders, models, settings, train, transfer
from companion.errors import CheckpointError


def _fashion_mnist_available() -> bool:
    """The Debian package's copy, or torchvision's in the data folder (what ``data.load`` reads)."""
    torchvision_copy = settings.data_dir() / "FashionMNIST" / "raw" / "train-images-idx3-ubyte"
    return data.DEBIAN_FASHION_MNIST.is_dir() or torchvision_copy.exists()


# The fashion_small fixture: real Fashion-MNIST images.
needs_fashion_mnist = real_data(
    _fashion_mnist_available(),
    f"needs Fashion-MNIST (apt-get install dataset-fashion-mnist, which fills {data.DEBIAN_FASHION_MNIST})",
)


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


@needs_fashion_mnist
def test_cached_features_are_reused_and_invalidated(tmp_path, fashion_small):
    train_set, _ = fashion_small
    subset = data.balanced_subset(train_set, 2)
    backbone = models.create("simple_cnn", num_classes=0, in_channels=1)
    prep = batch_transforms.BatchTransform(28, (0.5,), (0.5,), channels=1)
    f1, y1 = transfer.cached_features(backbone, subset, preprocess=prep, cache_dir=tmp_path)
    assert f1.shape == (20, 128) and len(list(tmp_path.glob("*.pt"))) == 1
    f2, _ = transfer.cached_features(backbone, subset, preprocess=prep, cache_dir=tmp_path)
    assert torch.equal(f1, f2) and len(list(tmp_path.glob("*.pt"))) == 1  # read back from disk
    # another subset, other weights, another transform: never the stale entry
    other = data.balanced_subset(train_set, 2, seed=9)
    transfer.cached_features(backbone, other, preprocess=prep, cache_dir=tmp_path)
    with torch.no_grad():
        backbone.features[0].weight.mul_(2)
    f3, _ = transfer.cached_features(backbone, subset, preprocess=prep, cache_dir=tmp_path)
    transfer.cached_features(
        backbone, subset, preprocess=batch_transforms.BatchTransform(32, (0.5,), (0.5,), channels=1), cache_dir=tmp_path
    )
    assert not torch.equal(f1, f3) and len(list(tmp_path.glob("*.pt"))) == 4


@needs_fashion_mnist
def test_extract_features_leaves_batchnorm_alone(fashion_small):
    backbone = models.create("simple_cnn", num_classes=0, in_channels=1)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    backbone.train()
    feats, labels = inference.extract_features(
        backbone,
        loaders.make_loader(fashion_small[0], 64),
        preprocess=batch_transforms.BatchTransform(28, (0.5,), (0.5,), channels=1),
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
        files.load_weights(target, source)  # the 6-class head does not fit a 4-class model


@needs_fashion_mnist
def test_multitask_net_trains_both_heads_through_fit(fashion_small):
    train_set, test_set = fashion_small
    group = torch.tensor([0, 1, 0, 0, 0, 2, 0, 2, 3, 2])  # tops, trousers, footwear, bags
    labels = torch.stack([train_set.labels, group[train_set.labels]], 1)
    test_labels = torch.stack([test_set.labels, group[test_set.labels]], 1)
    torch.manual_seed(0)
    net = transfer.MultiTaskNet(
        models.create("simple_cnn", num_classes=0, in_channels=1),
        models.spec("simple_cnn").feature_dim,
        {"category": 10, "group": 4},
    )
    prep = batch_transforms.BatchTransform(28, (0.5,), (0.5,), channels=1)
    before = {t: h.weight.detach().clone() for t, h in net.heads.items()}
    loader = loaders.ArrayLoader(train_set.images, labels, 50, shuffle=True)
    history = train.fit(
        net,
        loader,
        loaders.ArrayLoader(test_set.images, test_labels, 100),
        epochs=3,
        optimizer=torch.optim.AdamW(net.parameters(), lr=3e-3),
        preprocess=prep,
        loss_fn=net.loss,  # its .correct counts an image as right when every task is
    )
    assert all(not torch.equal(before[t], h.weight) for t, h in net.heads.items())  # both heads learned
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    acc = net.task_accuracy(loaders.ArrayLoader(test_set.images, test_labels, 100), preprocess=prep)
    assert acc["group"] > 0.4 and acc["category"] > 0.2  # chance: 0.25 (most frequent group 0.5) and 0.1
    assert 0 <= history[-1]["val_accuracy"] <= min(acc.values())  # all tasks right <= each task right


def test_multitask_net_rejects_single_task_labels():
    net = transfer.MultiTaskNet(torch.nn.Flatten(), 12, {"a": 3, "b": 2})
    logits = net(torch.randn(4, 3, 2, 2))
    assert logits.shape == (4, 5)
    with pytest.raises(ValueError, match=r"labels of shape \(B, 2\)"):
        net.loss(logits, torch.zeros(4, dtype=torch.long))
    expected = torch.nn.functional.cross_entropy(
        logits[:, :3], torch.zeros(4, dtype=torch.long)
    ) + torch.nn.functional.cross_entropy(logits[:, 3:], torch.ones(4, dtype=torch.long))
    assert torch.allclose(net.loss(logits, torch.tensor([[0, 1]] * 4)), expected)


def test_load_probe_head_puts_the_trained_layer_in_the_model():
    probe = transfer.linear_probe(models.spec("resnet18").feature_dim, 3)
    model = transfer.load_probe_head(models.create("resnet18", num_classes=3), "resnet18", probe)
    assert torch.equal(model.fc.weight, probe[-1].weight) and torch.equal(model.fc.bias, probe[-1].bias)
    with pytest.raises(RuntimeError, match="size mismatch"):
        transfer.load_probe_head(models.create("resnet18", num_classes=4), "resnet18", probe)


# ----------------------------------------------------------------------------- exact answers
# simple_cnn has three stages (features.0-6, 7-13, 14-20) and the head "classifier".

STAGE_PREFIXES = [tuple(f"features.{i}." for i in range(a, b)) for a, b in ((0, 7), (7, 14), (14, 21))]


def _names_under(model, prefixes):
    return {n for n, _ in model.named_parameters() if n.startswith(tuple(prefixes))}


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("trainable_last", [0, 1, 2, 3, 4])
def test_freeze_stages_leaves_exactly_the_last_stages_and_the_head(trainable_last):
    model = models.create("simple_cnn", num_classes=3)
    transfer.freeze_stages(model, "simple_cnn", trainable_last)
    kept = [p for stage in STAGE_PREFIXES[3 - min(trainable_last, 3) :] for p in stage] + ["classifier."]
    assert _trainable(model) == _names_under(model, kept)


def test_freeze_and_unfreeze_by_prefix():
    model = models.create("simple_cnn", num_classes=3)
    transfer.freeze(model, except_=("classifier", "features.3"))
    assert _trainable(model) == {"classifier.weight", "classifier.bias", "features.3.weight"}
    transfer.freeze(model)
    assert _trainable(model) == set()
    transfer.unfreeze(model, ["features.1", "features.4"])
    assert _trainable(model) == {"features.1.weight", "features.1.bias", "features.4.weight", "features.4.bias"}
    transfer.unfreeze(model)
    assert _trainable(model) == {n for n, _ in model.named_parameters()}


def test_freeze_batchnorm_freezes_batchnorm_parameters_only():
    model = transfer.freeze_batchnorm(models.create("simple_cnn", num_classes=3))
    batchnorm = {n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {f"{m}.{w}" for m in batchnorm for w in ("weight", "bias")}


def test_discriminative_groups_exact_learning_rates_and_members():
    model = models.create("simple_cnn", num_classes=3)
    groups = transfer.discriminative_param_groups(model, "simple_cnn", lr=0.1, decay=0.5, weight_decay=0.01)
    named = {id(p): n for n, p in model.named_parameters()}
    assert [g["stage"] for g in groups] == ["head", 2, 1, 0]
    assert [g["lr"] for g in groups] == pytest.approx([0.1, 0.05, 0.025, 0.0125], rel=1e-12)
    assert all(g["weight_decay"] == 0.01 for g in groups)
    assert {named[id(p)] for p in groups[0]["params"]} == {"classifier.weight", "classifier.bias"}
    for group, stage in zip(groups[1:], reversed(STAGE_PREFIXES)):
        assert {named[id(p)] for p in group["params"]} == _names_under(model, stage)
    transfer.freeze_stages(model, "simple_cnn", 1)  # frozen stages get no group at all
    groups = transfer.discriminative_param_groups(model, "simple_cnn", lr=0.1, decay=0.5)
    assert [g["stage"] for g in groups] == ["head", 2]
    assert sum(len(g["params"]) for g in groups) == len(_trainable(model))


def test_reinitialize_stages_changes_exactly_the_later_stages_and_the_head():
    model = models.create("simple_cnn", num_classes=3)
    with torch.no_grad():  # move every tensor away from its initial value, so any reset shows
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.rand_like(tensor) + 0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    transfer.reinitialize_stages(model, "simple_cnn", keep_first=1)
    changed = {k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])}
    expected = {
        k
        for k, v in before.items()
        if v.is_floating_point() and k.startswith(tuple(p for s in STAGE_PREFIXES[1:] for p in s) + ("classifier.",))
    }
    assert changed == expected


def test_transferable_state_is_exactly_the_matching_entries():
    source = {
        "a.weight": torch.zeros(2, 3),
        "a.bias": torch.zeros(2),
        "b.weight": torch.zeros(4, 4),
        "c": torch.zeros(1),
    }
    target = torch.nn.Module()
    target.a, target.b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 4)  # b.weight (4, 3): shape differs
    assert set(transfer.transferable_state(source, target)) == {"a.weight", "a.bias"}
    assert set(transfer.transferable_state(source, target, exclude=("a.bias",))) == {"a.weight"}
    assert set(transfer.transferable_state(source, target, exclude=("a.b",))) == {"a.weight", "a.bias"}  # whole names
    assert set(transfer.transferable_state(source, target, exclude=("a",))) == set()


def test_prefixes_match_whole_dotted_components():
    assert transfer.under("features.1.weight", ["features.1"]) and transfer.under("features.1", ["features.1."])
    assert not transfer.under("features.10.weight", ["features.1"]) and not transfer.under("fc2.weight", ["fc"])
    assert transfer.under("fc.bias", ["conv1", "fc"]) and not transfer.under("fc.bias", [])


def test_linear_probe_shapes_and_layers():
    probe = transfer.linear_probe(8, 3, dropout=0.25)
    assert [type(m).__name__ for m in probe] == ["Dropout", "Linear"] and probe[0].p == 0.25
    assert (probe[1].in_features, probe[1].out_features) == (8, 3)
    mlp = transfer.linear_probe(8, 3, hidden=5, dropout=0.1)
    assert [type(m).__name__ for m in mlp] == ["Linear", "ReLU", "Dropout", "Linear"]
    assert (mlp[0].in_features, mlp[0].out_features, mlp[3].in_features, mlp[3].out_features) == (8, 5, 5, 3)
    assert mlp[2].p == 0.1 and mlp(torch.randn(4, 8)).shape == (4, 3)


def test_extract_features_equal_the_eval_mode_backbone_in_loader_order():
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.Dropout(0.5))
    backbone.train()
    x, y = torch.randn(9, 4), torch.arange(9)
    features, labels = inference.extract_features(backbone, [(x[:5], y[:5]), (x[5:], y[5:])])
    with torch.no_grad():
        expected = backbone.eval()(x)
    assert torch.allclose(features, expected, atol=1e-6) and torch.equal(labels, y)
    assert features.dtype == torch.float32 and features.device.type == "cpu"


def test_feature_loader_batches_every_row_once():
    features, labels = torch.arange(10.0).view(10, 1), torch.arange(10)
    batches = list(transfer.feature_loader(features, labels, 4, shuffle=False))
    assert [len(y) for _, y in batches] == [4, 4, 2] and torch.equal(torch.cat([y for _, y in batches]), labels)
    shuffled = torch.cat([y for _, y in transfer.feature_loader(features, labels, 4, seed=3)])
    assert sorted(shuffled.tolist()) == list(range(10)) and shuffled.tolist() != list(range(10))


def test_multi_depth_features_are_the_pooled_activations_side_by_side():
    torch.manual_seed(0)
    model = models.create("simple_cnn", num_classes=3).eval()
    fused = transfer.MultiDepthFeatures(model, ["features.6", "features.13"])
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        first = model.features[:7](x)
        second = model.features[7:14](first)
        expected = torch.cat([first.mean(dim=(2, 3)), second.mean(dim=(2, 3))], dim=1)
        assert torch.allclose(fused(x), expected, atol=1e-6)


def test_multitask_correct_and_task_accuracy_count_exactly():
    net = transfer.MultiTaskNet(torch.nn.Flatten(), 5, {"a": 3, "b": 2}, weights={"b": 0.5})
    with torch.no_grad():
        net.heads["a"].weight.copy_(torch.eye(5)[:3])
        net.heads["a"].bias.zero_()
        net.heads["b"].weight.copy_(torch.eye(5)[3:])
        net.heads["b"].bias.zero_()
    x = torch.tensor(
        [[1.0, 0, 0, 1, 0], [0, 1, 0, 0, 1], [0, 0, 1, 1, 0], [1, 0, 0, 0, 1]]
    )  # predicts a=0,1,2,0; b=0,1,0,1
    labels = torch.tensor([[0, 0], [1, 1], [0, 0], [0, 1]])  # a right: rows 0, 1, 3; b right: every row
    logits = net(x)
    correct = net.loss.correct(logits, labels)
    assert correct.dim() == 0 and correct == 3  # rows 0, 1 and 3: every task right
    assert net.task_accuracy([(x[:3], labels[:3]), (x[3:], labels[3:])]) == {"a": 0.75, "b": 1.0}
    expected = nn_f.cross_entropy(logits[:, :3], labels[:, 0]) + 0.5 * nn_f.cross_entropy(logits[:, 3:], labels[:, 1])
    assert torch.allclose(net.loss(logits, labels), expected)
    assert {t: v.shape for t, v in net.loss.split(logits).items()} == {"a": (4, 3), "b": (4, 2)}
    with pytest.raises(ValueError, match="at least one task"):
        transfer.MultiTaskNet(torch.nn.Flatten(), 5, {})


@needs_fashion_mnist
def test_cached_features_are_the_backbones_and_come_back_from_disk(tmp_path, fashion_small, monkeypatch):
    subset = data.balanced_subset(fashion_small[0], 1)
    backbone = models.create("simple_cnn", num_classes=0, in_channels=1)
    prep = batch_transforms.BatchTransform(28, (0.5,), (0.5,), channels=1)
    first = transfer.cached_features(backbone, subset, preprocess=prep, cache_dir=tmp_path)
    expected = inference.extract_features(backbone, loaders.make_loader(subset, 4), preprocess=prep)
    assert torch.allclose(first[0], expected[0], atol=1e-6) and torch.equal(first[1], subset.labels)
    stored = torch.load(next(tmp_path.glob("*.pt")), weights_only=True)
    assert torch.equal(stored["features"], first[0]) and torch.equal(stored["labels"], first[1])
    monkeypatch.setattr(transfer, "extract_features", lambda *a, **k: pytest.fail("extracted a second time"))
    again = transfer.cached_features(backbone, subset, preprocess=prep, cache_dir=tmp_path)
    assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])  # read back from the file


def test_documented_defaults():
    """The defaults the docstrings promise: decay 0.5 and no weight decay per stage, the frozen
    extractor, a shuffled feature loader seeded 0."""
    model = models.create("simple_cnn", num_classes=3)
    groups = transfer.discriminative_param_groups(model, "simple_cnn", lr=0.1)
    assert [g["lr"] for g in groups] == pytest.approx([0.1, 0.05, 0.025, 0.0125])
    assert all(g["weight_decay"] == 0.0 for g in groups)
    transfer.freeze_stages(model, "simple_cnn")
    assert _trainable(model) == {"classifier.weight", "classifier.bias"}
    features, labels = torch.arange(20.0).view(20, 1), torch.arange(20)
    default = torch.cat([y for _, y in transfer.feature_loader(features, labels, 5)])
    assert torch.equal(default, torch.cat([y for _, y in transfer.feature_loader(features, labels, 5, seed=0)]))
    assert not torch.equal(default, torch.cat([y for _, y in transfer.feature_loader(features, labels, 5, seed=1)]))


def test_fingerprint_tells_apart_what_the_features_depend_on():
    fp = transfer._fingerprint
    zeros = torch.zeros(4, dtype=torch.uint8)
    assert fp(zeros) != fp(zeros.view(2, 2)) and fp(zeros) != fp(zeros.view(torch.int8))  # same bytes
    assert fp(None) != fp("bilinear") and fp("a") != fp("b") and fp(zeros, None) == fp(zeros, None)
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    assert fp(a) != fp(b) and fp(a) != fp(torch.nn.Linear(2, 3))


@needs_fashion_mnist
def test_cached_features_key_on_images_and_labels_and_default_folder(monkeypatch, tmp_path, fashion_small):
    import dataclasses

    monkeypatch.setenv("TLBOOK_WORK", str(tmp_path))
    subset = data.balanced_subset(fashion_small[0], 1)
    backbone = models.create("simple_cnn", num_classes=0, in_channels=1)
    prep = batch_transforms.BatchTransform(28, (0.5,), (0.5,), channels=1)
    _, labels = transfer.cached_features(backbone, subset, preprocess=prep)
    assert len(list((tmp_path / "features").glob("*.pt"))) == 1  # default: $TLBOOK_WORK/features
    relabelled = dataclasses.replace(subset, labels=subset.labels.flip(0))
    _, other_labels = transfer.cached_features(backbone, relabelled, preprocess=prep)
    assert torch.equal(other_labels, labels.flip(0))  # never the entry of the other labels
    changed = dataclasses.replace(subset, images=subset.images.flip(0))
    features, _ = transfer.cached_features(backbone, changed, preprocess=prep)
    assert len(list((tmp_path / "features").glob("*.pt"))) == 3


def test_multitask_task_accuracy_of_an_empty_loader_is_zero():
    net = transfer.MultiTaskNet(torch.nn.Flatten(), 5, {"a": 3})
    assert net.task_accuracy([]) == {"a": 0.0}
    with pytest.raises(ValueError, match=r"^MultiTaskNet needs at least one task, e\.g\. tasks=\{'category': 10\}$"):
        transfer.MultiTaskNet(torch.nn.Flatten(), 5, {})


def test_a_stage_prefix_may_end_with_a_dot():
    assert transfer.under("features.1.0.weight", ["features.1."]) and transfer.under("features.1", ["features.1."])
    assert not transfer.under("features.10.0.weight", ["features.1."])


def test_task_accuracy_of_a_single_image():
    net = transfer.MultiTaskNet(torch.nn.Identity(), 2, {"a": 2, "b": 2})
    with torch.no_grad():
        for head in net.heads.values():
            head.weight.copy_(torch.eye(2))
            head.bias.zero_()
    loader = [(torch.tensor([[1.0, 0.0]]), torch.tensor([[0, 1]]))]
    assert net.task_accuracy(loader) == {"a": 1.0, "b": 0.0}


def test_fusions_of_different_layers_do_not_share_cached_features(tmp_path, monkeypatch):
    monkeypatch.setenv("TLBOOK_WORK", str(tmp_path))  # the default cache folder, $TLBOOK_WORK/features
    images = data.ArrayImageDataset(
        torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8),
        torch.tensor([0, 1, 0, 1]),
        ["a", "b"],
        "x/train",
        "test",
    )
    net = models.create("simple_cnn", num_classes=2)
    prep = batch_transforms.BatchTransform.for_model("simple_cnn")
    blocks = [name for name, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)]
    first, _ = transfer.cached_features(
        transfer.MultiDepthFeatures(net, blocks[:1]), images, preprocess=prep, device="cpu"
    )
    both, _ = transfer.cached_features(
        transfer.MultiDepthFeatures(net, blocks[:2]), images, preprocess=prep, device="cpu"
    )
    assert both.shape[1] > first.shape[1] and len(list((tmp_path / "features").glob("*.pt"))) == 2


def test_cached_features_run_in_the_devices_inference_batches(tmp_path):
    seen = []
    backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
    backbone.register_forward_pre_hook(lambda module, args: seen.append(len(args[0])))
    images, labels = torch.zeros(70, 1, 8, 8, dtype=torch.uint8), torch.zeros(70, dtype=torch.long)
    ds = data.ArrayImageDataset(images, labels, ["a"], "test/x", "zeros", real=False)
    features, _ = transfer.cached_features(backbone, ds, preprocess=lambda x: x.float(), cache_dir=str(tmp_path))
    assert seen == [32, 32, 6] and features.shape == (70, 4)

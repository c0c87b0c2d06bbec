"""Atomic writes, safe loads, stable bytes: no half-written file, no unpickling of arbitrary objects,
equal state gives equal bytes."""
import hashlib
import os

import pytest
import torch

from advgame import UserError, artifacts
from advgame.models import (
    attacker_meta,
    build_attacker,
    build_classifier,
    classifier_meta,
    model_from_checkpoint,
)

CALLS = []


def record_call():
    CALLS.append(1)


class Payload:
    """Not a tensor or plain container: a weights-only load must refuse it."""

    def __reduce__(self):
        return (record_call, ())  # what a malicious pickle does: call a function on load


def files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_save_torch_interrupted_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    artifacts.save_torch({"w": torch.ones(3)}, path)
    real_save = torch.save

    def half_save(obj, f):
        real_save(obj, f)
        f.truncate(10)
        raise KeyboardInterrupt  # the user pressed Ctrl-C mid-write

    monkeypatch.setattr(torch, "save", half_save)
    with pytest.raises(KeyboardInterrupt):
        artifacts.save_torch({"w": torch.zeros(3)}, path)
    assert files(tmp_path) == ["m.pt"]  # no temporary file left behind
    assert torch.equal(artifacts.load_torch(path)["w"], torch.ones(3))


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_equal_state_gives_equal_bytes(tmp_path):
    """Two saves of equal tensors, to files of different names, give the same bytes (DVC sees no change)."""
    torch.manual_seed(0)
    model = build_classifier("smallcnn", 1, 10, 28)
    meta = classifier_meta("smallcnn", (5, 1, 28, 28), 10, defender="baseline")
    twin = build_classifier("smallcnn", 1, 10, 28)
    twin.load_state_dict(model.state_dict())
    artifacts.save_checkpoint(model, meta, tmp_path / "a.pt", epoch=1)
    artifacts.save_checkpoint(twin, dict(meta), tmp_path / "sub" / "other-name.pt", epoch=1)
    assert sha256(tmp_path / "a.pt") == sha256(tmp_path / "sub" / "other-name.pt")
    data = {"x": torch.rand(7, 1, 4, 4), "y": torch.arange(7), "note": "plain", "eta": 0.3}
    artifacts.save_torch(data, tmp_path / "d1.pt")
    artifacts.save_torch({k: v.clone() if torch.is_tensor(v) else v for k, v in data.items()}, tmp_path / "d2.pt")
    assert sha256(tmp_path / "d1.pt") == sha256(tmp_path / "d2.pt")
    artifacts.save_torch({**data, "eta": 0.4}, tmp_path / "d3.pt")
    assert sha256(tmp_path / "d3.pt") != sha256(tmp_path / "d1.pt")


def test_save_torch_roundtrip_of_plain_containers(tmp_path):
    data = {"x": torch.rand(3, 2), "y": torch.arange(3), "names": ["a", "b"], "n": 3, "eta": 0.3,
            "nested": {"w": torch.ones(2, dtype=torch.float64)}}
    artifacts.save_torch(data, tmp_path / "d.pt")
    back = artifacts.load_torch(tmp_path / "d.pt")
    assert back.keys() == data.keys() and back["names"] == ["a", "b"] and back["n"] == 3 and back["eta"] == 0.3
    for a, b in [(back["x"], data["x"]), (back["y"], data["y"]), (back["nested"]["w"], data["nested"]["w"])]:
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_checkpoint_saved_by_path_still_loads(tmp_path):
    """Files written before the fixed archive name (torch.save to a path) stay readable."""
    model = build_classifier("smallcnn", 1, 10, 28)
    meta = classifier_meta("smallcnn", (5, 1, 28, 28), 10)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "meta": meta}, tmp_path / "old.pt")
    ckpt = artifacts.load_checkpoint(tmp_path / "old.pt")
    assert ckpt["meta"] == meta and all(torch.equal(ckpt["state_dict"][k], v) for k, v in state.items())


def test_save_json_failure_keeps_old_file(tmp_path):
    path = tmp_path / "r.json"
    artifacts.save_json({"a": 1}, path)
    with pytest.raises(TypeError):
        artifacts.save_json({"a": {1, 2}}, path)  # a set is not JSON
    assert files(tmp_path) == ["r.json"]
    assert artifacts.load_json(path) == {"a": 1}


def test_save_creates_parent_folders(tmp_path):
    artifacts.save_json([1, 2], tmp_path / "a" / "b" / "c.json")
    assert artifacts.load_json(tmp_path / "a" / "b" / "c.json") == [1, 2]


@pytest.mark.parametrize("kind", ["smallcnn", "mlp"])
def test_checkpoint_roundtrip_gives_identical_outputs(tmp_path, kind):
    torch.manual_seed(0)
    if kind == "smallcnn":
        model = build_classifier("smallcnn", 1, 10, 28)
        meta = classifier_meta("smallcnn", (5, 1, 28, 28), 10, defender="baseline")
    else:
        model = build_attacker("mlp", (1, 28, 28), hidden=20)
        meta = attacker_meta("mlp", (5, 1, 28, 28), hidden=20, width=8)
    artifacts.save_checkpoint(model, meta, tmp_path / "c.pt", epoch=3)
    ckpt = artifacts.load_checkpoint(tmp_path / "c.pt")
    assert ckpt["meta"] == meta and ckpt["epoch"] == 3
    rebuilt = model_from_checkpoint(ckpt)
    assert type(rebuilt) is type(model)
    x = torch.rand(4, 1, 28, 28)
    model.eval(), rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))


def test_checkpoint_of_other_architecture_is_user_error(tmp_path):
    model = build_classifier("smallcnn", 1, 10, 28)
    meta = classifier_meta("cifarcnn", (1, 1, 28, 28), 10)
    artifacts.save_checkpoint(model, meta, tmp_path / "c.pt")
    with pytest.raises(UserError, match="cifarcnn"):
        model_from_checkpoint(artifacts.load_checkpoint(tmp_path / "c.pt"))


def assert_one_line_user_error(path, loader=artifacts.load_checkpoint):
    with pytest.raises(UserError) as e:
        loader(path)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg
    return msg


def test_random_bytes_checkpoint(tmp_path):
    path = tmp_path / "c.pt"
    path.write_bytes(os.urandom(4096))
    assert "corrupt" in assert_one_line_user_error(path)


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "c.pt"
    artifacts.save_checkpoint(build_classifier("smallcnn"), classifier_meta("smallcnn", (1, 28, 28), 10), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "corrupt" in assert_one_line_user_error(path)


def test_empty_checkpoint(tmp_path):
    path = tmp_path / "c.pt"
    path.write_bytes(b"")
    assert_one_line_user_error(path)


def test_arbitrary_object_is_not_unpickled(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "meta": {}, "payload": Payload()}, path)
    CALLS.clear()
    assert_one_line_user_error(path)
    assert_one_line_user_error(path, artifacts.load_torch)
    assert not CALLS
    torch.load(path, weights_only=False)  # the payload really is live: a full unpickle runs it
    assert CALLS


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "t.pt"
    artifacts.save_torch({"x": torch.zeros(2)}, path)
    assert "not an advgame checkpoint" in assert_one_line_user_error(path)


def test_missing_checkpoint(tmp_path):
    assert "not found" in assert_one_line_user_error(tmp_path / "none.pt")


def test_corrupt_json(tmp_path):
    path = tmp_path / "r.json"
    path.write_text('{"a": 1,')
    assert "corrupt" in assert_one_line_user_error(path, artifacts.load_json)


def test_missing_json(tmp_path):
    assert "not found" in assert_one_line_user_error(tmp_path / "r.json", artifacts.load_json)


def test_binary_garbage_json(tmp_path):
    path = tmp_path / "r.json"
    path.write_bytes(b"\xff\xfe\x00\x81garbage")
    assert_one_line_user_error(path, artifacts.load_json)


def test_wrong_shape_names_the_file_the_tensor_and_both_shapes(tmp_path):
    path = tmp_path / "c.pt"
    artifacts.save_checkpoint(build_attacker("mlp", (1, 28, 28), hidden=8),
                              attacker_meta("mlp", (1, 28, 28), hidden=16, width=32), path)
    with pytest.raises(UserError) as e:
        model_from_checkpoint(artifacts.load_checkpoint(path))
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg
    assert "tensor 'net.1.weight' has shape [8, 784] in the file, the model expects [16, 784]" in msg


@pytest.mark.parametrize("kind, expect, said", [
    ("attacker", "classifier", "an attacker network (AttNet) checkpoint where a classifier (defender) is expected"),
    ("magnet", "classifier", "a MagNet defender (classifier + reformer + detector) checkpoint where a classifier"),
    ("classifier", "attacker", "a classifier (defender) checkpoint where an attacker network (AttNet) is expected"),
])
def test_wrong_kind_says_which_kind_it_is_and_should_be(tmp_path, kind, expect, said):
    path = tmp_path / "m.pt"
    if kind == "attacker":
        artifacts.save_checkpoint(build_attacker("mlp", (1, 28, 28), 8), attacker_meta("mlp", (1, 28, 28), 8, 4), path)
    else:
        meta = {**classifier_meta("smallcnn", (1, 28, 28), 10), "kind": kind}
        artifacts.save_checkpoint(build_classifier("smallcnn"), meta, path)
    with pytest.raises(UserError) as e:
        model_from_checkpoint(artifacts.load_checkpoint(path), expect)
    assert said in str(e.value) and str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_the_classifier_of_a_magnet_checkpoint_still_loads_when_nothing_is_expected(tmp_path):
    path = tmp_path / "m.pt"
    meta = {**classifier_meta("smallcnn", (1, 28, 28), 10), "kind": "magnet"}
    artifacts.save_checkpoint(build_classifier("smallcnn"), meta, path)
    assert isinstance(model_from_checkpoint(artifacts.load_checkpoint(path)), torch.nn.Module)


def write_dvc_yaml(folder):
    (folder / "dvc.yaml").write_text(
        "stages:\n  fgsm-at:\n    cmd: x\n    outs: [models/fgsm-at.pt]\n"
        "  attackers-baseline:\n    cmd: y\n    outs: [models/attackers/baseline]\n")


def test_producer_hint_names_only_stages_that_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_dvc_yaml(tmp_path)
    assert artifacts.producer_hint("models/fgsm-at.pt") == "run `dvc repro fgsm-at`"
    assert artifacts.producer_hint("models/attackers/baseline/mlp.pt") == "run `dvc repro attackers-baseline`"
    hint = artifacts.producer_hint("models/attackers/fgsm-at")  # valid defender, not in the pipeline
    assert "dvc repro attackers-fgsm-at" not in hint and "study.defenders" in hint and "make pipeline" in hint
    (tmp_path / "dvc.yaml").unlink()
    assert "make pipeline" in artifacts.producer_hint("models/fgsm-at.pt")


def test_missing_file_advice_names_the_stage_of_dvc_yaml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_dvc_yaml(tmp_path)
    with pytest.raises(UserError, match=r"models/fgsm-at.pt: not found; run `dvc repro fgsm-at`$"):
        artifacts.load_checkpoint("models/fgsm-at.pt")


def test_unwritable_folder_is_one_line_naming_the_path(tmp_path, monkeypatch):
    path = tmp_path / "out" / "r.json"
    artifacts.save_json({"a": 1}, path)
    before = path.read_bytes()

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied", str(path.parent / ".r.json.x.tmp"))

    monkeypatch.setattr(artifacts.tempfile, "mkstemp", refuse)  # root ignores chmod: simulate it
    with pytest.raises(UserError) as e:
        artifacts.save_json({"a": 2}, path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: cannot write (Permission denied)") and str(path.parent) in msg
    assert "\n" not in msg and path.read_bytes() == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_really_refused(tmp_path):
    path = tmp_path / "out" / "r.json"
    artifacts.save_json({"a": 1}, path)
    os.chmod(path.parent, 0o555)
    try:
        with pytest.raises(UserError, match="cannot write"):
            artifacts.save_json({"a": 2}, path)
    finally:
        os.chmod(path.parent, 0o755)
    assert path.read_text() == '{\n  "a": 1\n}\n'

import hashlib

import pytest

from aimo import model
from aimo.tables import file_mode

pytestmark = pytest.mark.needs("unit")


def test_assemble_checks_hash_and_order(tmp_path):
    parts = []
    for i, chunk in enumerate([b"alpha-", b"beta-", b"gamma"]):
        parts.append(tmp_path / f"part{i}")
        parts[-1].write_bytes(chunk)
    good = hashlib.sha256(b"alpha-beta-gamma").hexdigest()
    target = tmp_path / "model.gguf"
    assert model.assemble(parts, target, good).read_bytes() == b"alpha-beta-gamma"
    target.unlink()
    with pytest.raises(ValueError, match="sha256 .* expected"):
        model.assemble(list(reversed(parts)), target, good)
    assert not target.exists() and not list(tmp_path.glob("*.part"))


def test_missing_part_package_is_an_error(monkeypatch):
    monkeypatch.setitem(
        model.PYPI_MODELS,
        "fake",
        {
            "packages": ["no_such_model_part_pkg"],
            "pip": ["no-such-model-part-pkg==1"],
            "gguf": "x.gguf",
            "sha256": "0" * 64,
            "upstream": "x",
            "license": "MIT",
        },
    )
    with pytest.raises(FileNotFoundError, match="no_such_model_part_pkg.*not installed"):
        model.part_paths("fake")


def test_unknown_sources_are_errors(tmp_path):
    with pytest.raises(ValueError, match="not a PyPI-carried model"):
        model.provide("pypi", "gpt-17", tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        model.provide("local", "mine", tmp_path / "m", path=str(tmp_path))
    with pytest.raises(ValueError, match="expected pypi, local or hub"):
        model.provide("ftp", "x", tmp_path / "m")
    assert not (tmp_path / "m").exists() and not list(tmp_path.glob(".m.*"))


def test_local_source_copies_and_records_licence(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text("{}")
    (src / "model.safetensors").write_bytes(b"")
    (src / "model.safetensors").chmod(0o600)  # as transformers leaves its weights
    info = model.provide("local", "mine", tmp_path / "m", path=str(src))
    assert (tmp_path / "m" / "config.json").is_file()
    # readable wherever the umask lets a new file be
    assert (tmp_path / "m" / "model.safetensors").stat().st_mode & 0o444 == 0o444 & file_mode()
    assert (tmp_path / "m" / "LICENSE.upstream").is_file()
    assert info["source"] == "local"

from pathlib import Path

import pytest

from alicerce import Settings
from alicerce.errors import ConfigError


def test_defaults_are_valid() -> None:
    s = Settings.load()
    assert s.embedder == "e5-small" and s.search_mode == "hybrid" and 0 <= s.alpha <= 1


def test_environment_overrides_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "alicerce.toml"
    cfg.write_text('alpha = 0.2\nsearch_k = 7\nhome = "/tmp/x"\n')
    monkeypatch.setenv("ALICERCE_CONFIG", str(cfg))
    monkeypatch.setenv("ALICERCE_ALPHA", "0.9")
    s = Settings.load()
    assert (s.alpha, s.search_k, s.home) == (0.9, 7, Path("/tmp/x"))
    assert Settings.load(alpha=0.1).alpha == 0.1  # explicit arguments win


def test_bad_value_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALICERCE_ALPHA", "2")
    with pytest.raises(ConfigError) as err:
        Settings.load()
    assert "alpha" in err.value.message and "2" in err.value.message
    assert "alicerce.toml" in err.value.hint


def test_unknown_key_in_toml_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "alicerce.toml"
    cfg.write_text("alpah = 0.2\n")
    monkeypatch.setenv("ALICERCE_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match="alpah"):
        Settings.load()


def test_malformed_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "alicerce.toml"
    cfg.write_text("alpha = = 1\n")
    monkeypatch.setenv("ALICERCE_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match="cannot read settings"):
        Settings.load()


def test_overlap_must_be_below_budget() -> None:
    with pytest.raises(ConfigError, match="chunk_overlap"):
        Settings.load(chunk_tokens=50, chunk_overlap=50)


def test_a_model_on_several_servers_and_a_store_url(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "alicerce.toml").write_text(
        '[models.big]\nurl = ["http://gpu-1:8000/v1", "http://gpu-2:8000/v1"]\nmodel = "m"\n')
    entry = Settings.load().models["big"]
    assert entry.urls == ("http://gpu-1:8000/v1", "http://gpu-2:8000/v1")
    with pytest.raises(ConfigError, match="http"):
        Settings.load(models={"big": {"url": ["gpu-1:8000"]}})
    with pytest.raises(ConfigError, match="exactly one of path"):
        Settings.load(models={"big": {"url": []}})
    with pytest.raises(ConfigError, match="PostgreSQL URL"):
        Settings.load(store="mysql://db/x")

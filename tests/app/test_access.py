"""The shared studio's token gate (app/access.py), run through Streamlit's AppTest: nothing but a login field
without the token; the studio with it, kept for the session."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from studio_core import share
from studio_core.config import RunConfig

MAIN = Path(__file__).resolve().parents[2] / "app" / "main.py"


@pytest.fixture
def shared(studio_env: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(share.SHARED_ENV, "1")
    return share.ensure_token(studio_env)


def _app() -> AppTest:
    return AppTest.from_file(str(MAIN), default_timeout=30)


def test_without_the_token_only_a_login_field_is_drawn(shared: str) -> None:
    at = _app().run()
    assert not at.exception
    assert [t.value for t in at.title] == ["PEFT Studio"] and not at.subheader  # the login, not the home page
    assert [w.label for w in at.text_input] == ["Access token"]
    assert not at.sidebar.button and not at.sidebar.code  # no Start, no run, no CLI command
    at.text_input[0].input("wrong-token")
    at.button[0].click().run()
    assert any("not this studio's access token" in e.value for e in at.error)
    assert [t.value for t in at.title] == ["PEFT Studio"]


def test_the_token_in_the_url_or_typed_opens_the_studio_for_the_session(shared: str) -> None:
    at = _app()
    at.query_params["token"] = shared
    at.run()
    assert "The steps" in [s.value for s in at.subheader]  # the home page
    typed = _app().run()
    typed.text_input[0].input(shared)
    typed.button[0].click().run()
    assert "The steps" in [s.value for s in typed.subheader]
    typed.run()  # a later rerun in the same session needs no token again, and puts it in the URL for a reload
    assert "The steps" in [s.value for s in typed.subheader] and typed.query_params["token"] == shared


def test_the_token_file_is_private_and_a_readable_one_is_refused(studio_env: Path) -> None:
    token = share.ensure_token(studio_env)
    path = share.token_path(studio_env)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(token) >= 32
    assert share.ensure_token(studio_env) == token  # kept across restarts
    assert share.ensure_token(studio_env, renew=True) != token
    path.chmod(0o644)
    with pytest.raises(share.InputError, match="chmod 600"):
        share.token_matches("x", studio_env)


def test_a_path_outside_the_roots_blocks_start_with_the_reason(shared: str, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.jsonl"
    outside.write_text('{"prompt": "a", "completion": "b"}\n')
    at = _app()
    at.query_params["token"] = shared
    at.run()
    at.switch_page(str(MAIN.parent.parent / "pages" / "01_data_resolve.py")).run()  # Home first; the path is on step 1
    at.text_input(key="field:data.path").input(str(outside)).run()
    assert at.sidebar.button(key="sidebar:start").disabled
    assert any("outside the folders this shared studio may read" in e.value for e in at.sidebar.error)


def test_signing_in_a_shared_studio_asks_for_the_passphrase_at_start(shared: str, studio_env: Path) -> None:
    from studio_core.package import generate_keys

    generate_keys(studio_env, passphrase="s3cret-pass")
    at = _app()
    at.query_params["token"] = shared
    config = RunConfig().model_dump(mode="json")
    for section in ("export", "package", "signing"):
        config[section]["enabled"] = True
    at.session_state["run_config"] = config
    at.run()
    assert at.sidebar.button(key="sidebar:start").disabled  # no passphrase yet
    at.sidebar.text_input(key="access:passphrase").input("wrong").run()
    assert at.sidebar.button(key="sidebar:start").disabled
    assert any("wrong passphrase" in e.value for e in at.sidebar.error)
    at.sidebar.text_input(key="access:passphrase").input("s3cret-pass").run()
    assert not at.sidebar.button(key="sidebar:start").disabled

"""Run first by app/main.py, before navigation draws any page: the shared studio's token gate, and a warning when
the server runs without the settings the studio depends on (started some other way than `peft-studio studio`)."""

from __future__ import annotations

import hashlib

import streamlit as st

from studio_core import share
from studio_core.errors import InputError

ACCESS_KEY = "access:granted"
LOCAL_ADDRESSES = ("127.0.0.1", "localhost", "::1")


def guard() -> None:
    """Stop the script here (login field only) in a shared studio until this session gives the token."""
    if share.is_shared():
        _require_token()
    else:
        _warn_about_settings()


def _require_token() -> None:
    if st.session_state.get(ACCESS_KEY):
        if "token" not in st.query_params:  # a page switch drops it: put it back, so a reload stays signed in
            st.query_params["token"] = st.session_state[ACCESS_KEY]
        return
    try:
        candidate = st.query_params.get("token")
        if share.token_matches(candidate):
            st.session_state[ACCESS_KEY] = candidate.strip()  # kept for this session, and in its URL
            return
    except InputError as e:
        st.error(str(e))
        st.stop()
    st.title("PEFT Studio")
    with st.form("access:login"):
        typed = st.text_input("Access token", type="password",
                              help="Printed by `peft-studio studio --share`; also in the home's access-token file.")
        if st.form_submit_button("Open the studio"):
            if share.token_matches(typed):
                st.session_state[ACCESS_KEY] = typed.strip()
                st.rerun()
            st.error("That is not this studio's access token.")
    st.stop()


def _warn_about_settings() -> None:
    address = st.get_option("server.address")
    if address not in LOCAL_ADDRESSES:
        st.warning(f"This studio listens on {'every interface' if not address else address}, without an access token: "
                   "anyone who can reach this port can read your runs and start jobs. Restart it with "
                   "`peft-studio studio` (this machine only) or `peft-studio studio --share` (token required).")
    if st.get_option("runner.postScriptGC"):
        st.warning("Streamlit's `runner.postScriptGC` is on: every refresh of a live view runs a full garbage "
                   "collection and training in the studio runs many times slower. Start it with `peft-studio studio` "
                   "(or `make studio`), which passes the studio's settings explicitly.")


def signing_secrets(config) -> dict[str, str] | None:
    """For Start in a shared studio that signs: ask for the key's passphrase and check it now, not after training.

    Returns the secrets for `JOBS.submit(..., secrets=...)` (piped to the job's process, never written to disk or
    the queue): {} when none is needed, None while the passphrase is missing or wrong (Start stays disabled).
    """
    if config is None or not share.is_shared() or not config.signing.enabled:
        return {}
    from studio_core.package import load_private_keys

    typed = st.text_input("Signing key passphrase", type="password", key="access:passphrase",
                          help="The passphrase of the signing key: sent to the run's process only, never stored.")
    if not typed:
        st.caption("Signing needs the key's passphrase before Start.")
        return None
    checked = hashlib.sha256(f"{config.signing.key_id}\0{typed}".encode()).hexdigest()
    if st.session_state.get("access:passphrase-checked") != checked:  # decrypting costs; once per new passphrase
        try:
            load_private_keys(None, config.signing.key_id, typed)
        except InputError as e:
            st.error(str(e))
            return None
        st.session_state["access:passphrase-checked"] = checked
    return {config.signing.passphrase_env: typed}

"""Step 12, Evidence Signing: its settings, the signing keys in the studio home, and the policy gate."""

import streamlit as st

from app.steps import step_page
from studio_core.package import generate_keys, list_keys
from studio_core.runs import studio_home
from studio_core.share import is_shared

step_page(12)
st.subheader("Signing keys")
keys = list_keys(studio_home())
if keys:
    st.dataframe([{"key id": k.key_id, "created": k.created, "encrypted": k.encrypted} for k in keys],
                 hide_index=True)
else:
    st.info("No signing key yet: signing needs one.")
if st.button("Create a signing key", key="signing:generate", disabled=is_shared(),  # a shared studio needs a passphrase
             help="Ed25519 + ML-DSA-65, private files readable by you only (0600). For a passphrase-protected key "
                  "use `peft-studio keys generate --passphrase-env VAR` (the only kind a shared studio signs with)."):
    info = generate_keys(studio_home())
    st.success(f"Created key {info.key_id[:16]}...")
    st.rerun()

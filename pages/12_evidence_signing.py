"""Step 12, Evidence Signing: its settings, the signing keys, and the last package's signature and policy gate."""

import streamlit as st

from app import activity, results
from app.steps import step_nav, step_page
from studio_core.errors import StudioError
from studio_core.package import generate_keys, list_keys, load_public_keys, verify_package
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
results.from_last_run("signing.json", "Signature of the last package", results.signature,
                      "No run has signed a package yet (turn on steps 11 and 12).")
signed = activity.latest_artifact("package/signature.dsse.json")
if signed is not None and st.button("Verify it now", key="signing:verify",
                                    help="Checks every payload digest and both signatures against the keys here."):
    try:
        report = verify_package(signed[1].parent, load_public_keys(studio_home()))
        (st.success if report.ok else st.error)("Verifies now." if report.ok else "; ".join(report.reasons))
    except StudioError as e:
        st.error(str(e))
results.from_last_run("policy.json", "Policy gate of the last run", results.policy,
                      "No policy gate has run yet (turn it on above with a policy file).")
step_nav(12)

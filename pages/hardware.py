"""Hardware: the profile the studio plans with, which backends it found, and a CUDA round-trip check."""

import streamlit as st

from studio_core.catalog import all_backends, all_connectors
from studio_core.hardware import cuda_check_rows, format_profile, hardware_profile, validate_cuda
from studio_core.runs import studio_home

st.title("Hardware")
refresh = st.button("Refresh")
profile = hardware_profile(studio_home(), refresh=refresh)
st.table({label: value for label, value in format_profile(profile)})
st.subheader("Backends")
st.dataframe(
    [{"backend": b.name, "usable": b.available, "version": b.version or "", "why not / install": ""
      if b.available else f"{b.reason} ({b.install})"} for b in all_backends()],
    hide_index=True,
)
st.subheader("Connectors")
st.caption("Where data and models come from and where runs are tracked (step 6, Tracking).")
st.dataframe(
    [{"connector": c.name, "kind": c.kind, "what": c.description, "usable": c.status().available,
      "version": c.status().version or "", "why not / install": "" if c.status().available
      else f"{c.status().reason} ({c.status().install})"} for c in all_connectors()],
    hide_index=True,
)
if st.button("Check CUDA", key="hardware:check_cuda",
             help="Allocate, copy, multiply (fp32/fp16/bf16) and compare on every GPU; the same as "
                  "`peft-studio hardware --check-cuda`."):
    with st.spinner("Running the CUDA round trip..."):
        st.session_state["hardware:cuda_check"] = validate_cuda()
check = st.session_state.get("hardware:cuda_check")
if check is not None:
    show = {"passed": st.success, "failed": st.error, "no_cuda": st.info}[check.status]
    show(check.message + (f" — fix: {check.hint}" if check.hint else ""))
    if check.devices:
        st.dataframe(cuda_check_rows(check), hide_index=True)

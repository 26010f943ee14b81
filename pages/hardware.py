"""Hardware: the profile the studio plans with, and which backends it found."""

import streamlit as st

from studio_core.catalog import all_backends
from studio_core.hardware import format_profile, hardware_profile
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

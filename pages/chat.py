"""Chat: a finished run's tuned model and its base answering side by side, streamed, as `peft-studio chat RUN`."""

import streamlit as st

from app.chat import worker
from studio_core.runs import RunStore

store = RunStore()
st.title("Chat")
st.caption("Talk to a run's tuned model and its base model side by side, through the chat template it trained "
           "with. Answers stream from a worker process (the models load once, on the first message); the other "
           "pages stay usable meanwhile.")
runs = [r.run_id for r in store.list() if (r.artifacts / "adapter" / "adapter_config.json").is_file()]
if not runs:
    st.info("No run has a trained adapter yet: chat opens once a run finishes step 6.")
    st.stop()
left, right = st.columns([2, 1])
run_id = left.selectbox("Run", runs, key="chat:run")
run = store.get(run_id)
has_merged = (run.artifacts / "merged" / "config.json").is_file()
source = right.radio("Tuned model", ["adapter", "merged"] if has_merged else ["adapter"], key="chat:source",
                     horizontal=True, help="The unmerged adapter on a fresh base (stock peft), or the merged model.")
with st.expander("System prompt and sampling"):
    system = st.text_area("System prompt", key="chat:system", help="Sent first, through the training chat template.")
    a, b, c, d = st.columns(4)
    temperature = a.number_input("Temperature", 0.0, 2.0, 0.0, 0.1, key="chat:temperature", help="0: greedy.")
    top_p = b.number_input("Top-p", 0.05, 1.0, 1.0, 0.05, key="chat:top_p", help="With temperature > 0.")
    top_k = c.number_input("Top-k", 0, 1000, 0, key="chat:top_k", help="0: off. With temperature > 0.")
    max_new = d.number_input("Max new tokens", 1, 1024, 128, key="chat:max_new", help="Longest answer.")
st.code(f"peft-studio chat {run_id} --source {source}" + (f" --temperature {temperature:g}" if temperature else ""),
        language="bash")
key = f"chat:{run_id}:{source}"
history = st.session_state.setdefault(f"{key}:history", {"tuned": [], "base": []})
sampling = {"temperature": temperature, "top_p": top_p, "top_k": int(top_k), "max_new_tokens": int(max_new)}
chat = worker(run.path, source, store.home)
prompt = st.chat_input("Message both models", key="chat:input",
                       disabled=st.session_state.get(f"{key}:pending") is not None)
if prompt:
    for side in ("tuned", "base"):
        history[side].append({"role": "user", "content": prompt})
    requests = [{"messages": history[s], "system": system or None, "sampling": sampling, "sides": [s]}
                for s in ("tuned", "base")]
    st.session_state[f"{key}:pending"] = chat.ask(requests)
if st.button("New conversation", key="chat:clear"):
    st.session_state[f"{key}:history"] = {"tuned": [], "base": []}
    st.session_state.pop(f"{key}:pending", None)
    st.rerun()


@st.fragment(run_every=0.5)
def _conversation() -> None:
    pending = st.session_state.get(f"{key}:pending")
    reply = chat.reply(pending) if pending else None
    if reply is not None and reply.done:  # the answers join each side's conversation
        for side in ("tuned", "base"):
            history[side].append({"role": "assistant", "content": reply.text.get(side, "").strip()})
        st.session_state.pop(f"{key}:pending")
        st.session_state[f"{key}:seconds"] = reply.seconds
        if reply.error:
            st.session_state[f"{key}:error"] = reply.error
        st.rerun()  # the whole page: the message box opens again
    columns = dict(zip(("tuned", "base"), st.columns(2), strict=True))
    for side, column in columns.items():
        column.subheader("Tuned" if side == "tuned" else "Base")
        for message in history[side]:
            column.chat_message(message["role"]).write(message["content"])
        if reply is not None and not reply.done:
            column.chat_message("assistant").write(reply.text.get(side, "") + " ▌")
        elif side in st.session_state.get(f"{key}:seconds", {}):
            column.caption(f"answered in {st.session_state[f'{key}:seconds'][side]:.1f} s")
    if reply is not None and not reply.done and chat.ready is None:
        st.caption("Loading the models in the chat worker…")
    if st.session_state.get(f"{key}:error"):
        st.error(st.session_state.pop(f"{key}:error"))


_conversation()

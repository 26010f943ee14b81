"""Fitting a run into the memory there is: cheapest changes first, each with its reason."""

from types import SimpleNamespace

from studio_core.config import validate_config
from studio_core.train.fit import estimate_for, fit_to_memory
from studio_core.hardware.memory import GIB

SMOLLM2 = SimpleNamespace(hidden_size=576, num_attention_heads=9, num_key_value_heads=3, num_hidden_layers=30,
                          intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True)
BASE, ADAPTER = 134_515_008, 4_884_480


def config(**training):
    return validate_config({"training": {"per_device_batch_size": 8, "gradient_accumulation_steps": 2,
                                         "label_words": [], **training},
                            "data": {"max_length": 1024}})


def test_a_run_that_fits_is_left_alone():
    fit = fit_to_memory(config(), SMOLLM2, BASE, ADAPTER, "fp32", budget=100 * GIB)
    assert fit.fits and fit.changes == {} and "nothing to change" in fit.reasons[-1]


def test_checkpointing_comes_first_then_smaller_batches_keeping_the_effective_batch():
    cfg = config()
    full = estimate_for(cfg, SMOLLM2, BASE, ADAPTER, "fp32").total
    checkpointed = estimate_for(cfg.model_copy(update={"training": cfg.training.model_copy(
        update={"gradient_checkpointing": True})}), SMOLLM2, BASE, ADAPTER, "fp32").total
    fit = fit_to_memory(cfg, SMOLLM2, BASE, ADAPTER, "fp32", budget=(checkpointed + full) / 2)
    assert fit.fits and fit.changes == {"training.gradient_checkpointing": True}
    tight = fit_to_memory(cfg, SMOLLM2, BASE, ADAPTER, "fp32", budget=checkpointed * 0.6)
    assert tight.changes["training.gradient_checkpointing"] is True
    b, a = tight.changes["training.per_device_batch_size"], tight.changes["training.gradient_accumulation_steps"]
    assert b < 8 and b * a == 16 and tight.estimate.total <= tight.budget
    assert any("the same 16 examples per optimizer step" in r for r in tight.reasons)


def test_qlora_is_the_last_resort_on_a_gpu_and_is_refused_on_a_cpu_where_it_saves_nothing():
    cfg = config()
    gpu = fit_to_memory(cfg, SMOLLM2, BASE, ADAPTER, "fp32", budget=0.0, device="cuda")
    assert gpu.changes["training.per_device_batch_size"] == 1 and gpu.changes["method.name"] == "qlora"
    assert any("qlora instead of lora" in r for r in gpu.reasons)
    assert not gpu.fits and "lower data.max_length" in gpu.reasons[-1]
    steps = [float(r.rsplit(": ", 1)[1].split()[0]) for r in gpu.reasons[1:-1]]
    assert steps == sorted(steps, reverse=True)  # every change it keeps lowers the estimate
    cpu = fit_to_memory(cfg, SMOLLM2, BASE, ADAPTER, "fp32", budget=0.0, device="cpu")
    assert "method.name" not in cpu.changes  # the mapped fp32 checkpoint stays resident beside the 4-bit copy
    assert any("qlora would not help here" in r for r in cpu.reasons)


def test_an_odd_batch_shrinks_by_a_divisor_so_the_effective_batch_stays_exact():
    fit = fit_to_memory(config(per_device_batch_size=6, gradient_accumulation_steps=1), SMOLLM2, BASE, ADAPTER,
                        "fp32", budget=0.0)
    seen = [(int(r.split()[1]), int(r.split()[4].rstrip(":"))) for r in fit.reasons if r.startswith("batch ")]
    assert seen == [(3, 2), (1, 6)]


def test_several_processes_on_a_cpu_count_every_process_and_the_launcher_but_one_gpu_each_on_cuda():
    from studio_core.train.fit import machine_memory

    one, two = config(), config(nproc=2)
    per_process = estimate_for(two, SMOLLM2, BASE, ADAPTER, "fp32")
    assert per_process.total == estimate_for(one, SMOLLM2, BASE, ADAPTER, "fp32").total  # per process: unchanged
    need = machine_memory(two, per_process)
    assert need > 2 * per_process.total and need < 3 * per_process.total  # two processes plus the launcher's model
    assert machine_memory(two, per_process, "cuda") == per_process.total  # one GPU per process
    budget = (per_process.total + need) / 2  # one process fits, two do not
    assert fit_to_memory(one, SMOLLM2, BASE, ADAPTER, "fp32", budget=budget).changes == {}
    fit = fit_to_memory(two, SMOLLM2, BASE, ADAPTER, "fp32", budget=budget)
    assert fit.changes and "2 processes of" in fit.reasons[0]


def test_with_label_words_the_batch_stops_at_two_rows_and_says_why():
    words = ["COMPLIANT", "NON-COMPLIANT"]
    fit = fit_to_memory(config(label_words=words), SMOLLM2, BASE, ADAPTER, "fp32", budget=0.0)
    changes = fit.changes
    assert changes["training.per_device_batch_size"] == 2 and changes["training.gradient_accumulation_steps"] == 8
    assert any(r.startswith("kept 2 rows per pass: the label loss") for r in fit.reasons)
    odd = fit_to_memory(config(per_device_batch_size=6, gradient_accumulation_steps=1, label_words=words,
                               label_group=""), SMOLLM2, BASE, ADAPTER, "fp32", budget=0.0)
    assert odd.changes["training.per_device_batch_size"] == 3  # 3 has no divisor of two or more below it
    assert any(r.startswith("kept 3 rows per pass") for r in odd.reasons)
    # Under training.label_group a pass holds whole tuples, one row of each word: 6 goes to 2, not to 3.
    grouped = fit_to_memory(config(per_device_batch_size=6, gradient_accumulation_steps=1, label_words=words,
                                   label_group="Policy rule: (.*)"), SMOLLM2, BASE, ADAPTER, "fp32", budget=0.0)
    assert grouped.changes["training.per_device_batch_size"] == 2
    assert grouped.changes["training.gradient_accumulation_steps"] == 3
    assert any("a multiple of the 2 label words under training.label_group" in r for r in grouped.reasons)


def test_short_rows_on_cpu_count_the_attention_probabilities_training_keeps():
    from studio_core.hardware.memory import estimate_training_memory, model_shape
    from studio_core.train.attention import EAGER_MAX_KV

    sdpa = SimpleNamespace(**vars(SMOLLM2), _attn_implementation="sdpa")
    short = validate_config({"training": {"label_words": []}, "data": {"max_length": 160}})
    got = estimate_for(short, sdpa, BASE, ADAPTER, "bf16")
    args = dict(base_params=BASE, adapter_params=ADAPTER, batch=short.training.per_device_batch_size, seq_len=160,
                weight_format="bf16", compute="bf16", gradient_checkpointing=False, device="cpu",
                adapter_dropout=short.method.dropout > 0)
    without = estimate_training_memory(**args, **model_shape(sdpa))
    # 9 heads x 160^2 query-key pairs x batch, 30 layers, 4 bytes (fp32 softmax) + 2 (its bf16 copy)
    assert got.activations - without.activations == 30 * 9 * 160**2 * short.training.per_device_batch_size * 6
    # long rows run on sdpa: the longest batch's estimate, with no probabilities, is the larger
    long = validate_config({"training": {"label_words": []}, "data": {"max_length": 1024}})
    assert estimate_for(long, sdpa, BASE, ADAPTER, "bf16").total == estimate_training_memory(
        **{**args, "seq_len": 1024}, **model_shape(sdpa)).total
    assert 160 <= EAGER_MAX_KV
    # on a GPU training keeps sdpa
    assert estimate_for(short, sdpa, BASE, ADAPTER, "bf16", device="cuda").activations == estimate_training_memory(
        **{**args, "device": "cuda"}, **model_shape(sdpa)).activations

"""PyTorch + PEFT side of `cargo bench -p doctune-train --bench train`: the same training run as
DocTune's (same model folder, the same train.jsonl examples in order, LoRA r=8 alpha=16 on q/v
without dropout, AdamW, cosine schedule, clipping at 1.0, micro-batch and steps), data loading
included, then the evaluation loss on val.jsonl. Prints one JSON line: `tokens_per_sec` is the
steady state (steps 2 to N; the first step's one-time costs apart), `tokens_per_sec_all` the
whole run. Needs torch,
transformers, peft (not part of CI).

Options: `--order FILE` (the example indices to train on, in order; default the file's order),
`--adapter DIR` (start from this PEFT adapter instead of a fresh one). With `--gemm M K N THREADS`
it only measures a plain (M×K)·(K×N) GEMM in f32 and bf16 and prints both GFLOP/s.

Environment: `DOCTUNE_BENCH_ATTN` (`sdpa`, the default, or `eager`), `DOCTUNE_BENCH_DEVICE` (`cpu` or `cuda`) and `DOCTUNE_BENCH_PRECISION` (`f32`, `bf16`,
`f16`), as DocTune's side gets them: the base model in that dtype on that device, the LoRA
matrices in f32 (PEFT's `autocast_adapter_dtype`), f16 with `torch.amp.GradScaler`; bf16 on the
CPU as CPU autocast (f32 weights, `torch.autocast("cpu", dtype=torch.bfloat16)` around the
forward pass and loss); on CUDA the
JSON also has `peak_gpu_bytes` (`torch.cuda.max_memory_reserved`)."""
import json
import os
import resource
import sys
import time

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, get_cosine_schedule_with_warmup


def read(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


DEVICE = os.environ.get("DOCTUNE_BENCH_DEVICE", "cpu")
ATTN = os.environ.get("DOCTUNE_BENCH_ATTN", "sdpa")
DTYPE = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[os.environ.get("DOCTUNE_BENCH_PRECISION", "f32")]
# bf16 on the CPU is what a PyTorch user gets from CPU autocast: f32 weights, linear layers (and
# the other ops autocast lists) in bf16, the loss and reductions in f32.
AUTOCAST = DEVICE == "cpu" and DTYPE == torch.bfloat16
LOAD_DTYPE = torch.float32 if AUTOCAST else DTYPE


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def loss_of(model, batch):
    ids = torch.tensor([r["ids"] for r in batch], device=DEVICE)
    labels = ids.clone()
    mask = torch.tensor([r["mask"] for r in batch], device=DEVICE)
    labels[mask == 0] = -100
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=AUTOCAST):
        loss = model(input_ids=ids, labels=labels).loss
    return loss, int((mask[:, 1:] == 1).sum())


def gemm_peak(m, k, n, threads):
    torch.set_num_threads(threads)
    out = {}
    for name, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(m, k, dtype=dtype, device=DEVICE), torch.randn(k, n, dtype=dtype, device=DEVICE)
        for _ in range(3):
            a @ b
        sync()
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 1.0:
            for _ in range(10):
                a @ b
            sync()
            reps += 10
        out[name] = 2 * m * k * n * reps / (time.perf_counter() - t0) / 1e9
    print(json.dumps(out))


def kernels():
    """What PyTorch ran: ATen's CPU capability, MKL's instruction limit, the attention."""
    mkl = os.environ.get("MKL_ENABLE_INSTRUCTIONS", "its best")
    cast = ", bf16 autocast" if AUTOCAST else ""
    return f"torch {torch.__version__}, ATen {torch.backends.cpu.get_cpu_capability()}, MKL {mkl}, attention {ATTN}{cast}"


def option(name):
    if name in sys.argv:
        i = sys.argv.index(name)
        value = sys.argv[i + 1]
        del sys.argv[i:i + 2]
        return value
    return None


def main():
    if sys.argv[1] == "--gemm":
        gemm_peak(*map(int, sys.argv[2:6]))
        return
    order_file, adapter = option("--order"), option("--adapter")
    model_dir, data_dir, threads, steps, micro, lr = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=LOAD_DTYPE, attn_implementation=ATTN).to(DEVICE)
    if adapter:
        model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
    else:
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, 0, steps)
    scaler = torch.amp.GradScaler(DEVICE, enabled=DTYPE == torch.float16)
    sync()
    t0 = time.perf_counter()
    train = read(f"{data_dir}/train.jsonl")  # data loading is part of the timed run
    order = json.load(open(order_file)) if order_file else [i % len(train) for i in range(steps * micro)]
    tokens = 0
    losses = []
    # Steady state: the first step (oneDNN's kernel creation, first allocations) timed apart.
    t1, tokens1 = None, 0
    for step in range(steps):
        batch = [train[order[step * micro + k]] for k in range(micro)]
        loss, _ = loss_of(model, batch)
        losses.append(float(loss))
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        scaler.step(opt)
        scaler.update()
        sched.step()
        opt.zero_grad(set_to_none=True)
        tokens += sum(len(r["ids"]) for r in batch)
        if step == 0:
            sync()
            t1, tokens1 = time.perf_counter(), tokens
    sync()
    t_end = time.perf_counter()
    dt = t_end - t0
    steady = (tokens - tokens1) / (t_end - t1) if steps > 1 else tokens / dt
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        val = read(f"{data_dir}/val.jsonl")
        for k in range(0, len(val), micro):
            loss, n = loss_of(model, val[k:k + micro])
            total += float(loss) * n
            count += n
    peak_gpu = torch.cuda.max_memory_reserved() if DEVICE == "cuda" else None
    print(json.dumps({"tokens_per_sec": steady, "tokens_per_sec_all": tokens / dt, "seconds": dt, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "eval_loss": total / count, "losses": losses, "peak_gpu_bytes": peak_gpu, "kernels": kernels()}))


if __name__ == "__main__":
    main()

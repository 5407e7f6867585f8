"""PyTorch + PEFT side of `cargo bench -p doctune-train --bench train`: the same training run as
DocTune's (same model folder, the same train.jsonl examples in order, LoRA r=8 alpha=16 on q/v
without dropout, AdamW, cosine schedule, clipping at 1.0, micro-batch and steps), data loading
included, then the evaluation loss on val.jsonl. Prints one JSON line. Needs torch,
transformers, peft (not part of CI)."""
import json
import resource
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, get_cosine_schedule_with_warmup


def read(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def loss_of(model, batch):
    ids = torch.tensor([r["ids"] for r in batch])
    labels = ids.clone()
    mask = torch.tensor([r["mask"] for r in batch])
    labels[mask == 0] = -100
    return model(input_ids=ids, labels=labels).loss, int((mask[:, 1:] == 1).sum())


def main():
    model_dir, data_dir, threads, steps, micro, lr = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, 0, steps)
    t0 = time.perf_counter()
    train = read(f"{data_dir}/train.jsonl")  # data loading is part of the timed run
    tokens = 0
    for step in range(steps):
        batch = [train[(step * micro + k) % len(train)] for k in range(micro)]
        loss, _ = loss_of(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        tokens += sum(len(r["ids"]) for r in batch)
    dt = time.perf_counter() - t0
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        val = read(f"{data_dir}/val.jsonl")
        for k in range(0, len(val), micro):
            loss, n = loss_of(model, val[k:k + micro])
            total += float(loss) * n
            count += n
    print(json.dumps({"tokens_per_sec": tokens / dt, "seconds": dt, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "eval_loss": total / count}))


if __name__ == "__main__":
    main()

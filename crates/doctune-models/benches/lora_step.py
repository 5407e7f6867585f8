"""PyTorch + PEFT side of `cargo bench -p doctune-models --bench lora_step`.

Loads the model folder the bench wrote, adds the same LoRA (r=8, alpha=16, q/v), and times
forward + backward of the causal-LM loss on the same token ids (`ids.json`), with
torch.set_num_threads equal to candle's thread count. Prints one JSON line.
Needs `pip install torch transformers peft` (not part of CI).
"""
import json
import resource
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM


def main():
    folder, threads, steps, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    with open(f"{folder}/ids.json") as f:
        ids = torch.tensor(json.load(f))
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
                     task_type="CAUSAL_LM")
    model = get_peft_model(model, cfg)
    model.train()
    first_loss = None
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        model.zero_grad(set_to_none=True)
        if first_loss is None:
            first_loss = float(out.loss)
    dt = time.perf_counter() - t0
    print(json.dumps({
        "tokens_per_sec": ids.numel() * steps / dt,
        "step_secs": dt / steps,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "loss": first_loss,
        "torch": torch.__version__,
        "attn": model.config._attn_implementation,
    }))


if __name__ == "__main__":
    main()

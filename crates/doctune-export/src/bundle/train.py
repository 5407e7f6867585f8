"""DocTune job bundle: fine-tune the bundle's base model on its dataset with transformers'
Trainer and PEFT, with the settings DocTune chose (bundle.json). Run it from anywhere, with no
arguments:

    python train.py                                 # one process (a GPU if there is one, else the CPU)
    torchrun --nproc_per_node=N train.py            # one node, N GPUs (DDP; gloo on CPUs)
    accelerate launch --use_fsdp train.py           # FSDP (see README.md)

It reads data/train.jsonl (pre-tokenised: input_ids, attention_mask, labels with -100 where no
loss is taken) in data/order.json's order — the order DocTune's trainer visits the examples in —
and writes output/adapter/ (a PEFT adapter) or output/model/ (full fine-tuning), output/metrics.jsonl
(one line per optimiser step, in DocTune's metrics shape) and output/result.json. Bring it back
with `doctune runs import --project P output/`.

Environment: DOCTUNE_BASE_MODEL (a model folder or Hub id instead of the bundle's),
DOCTUNE_OUTPUT (another output folder), DOCTUNE_MAX_STEPS (stop after this many steps).
Needs torch, transformers and peft."""
import json
import math
import os
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset, SequentialSampler
from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

HERE = Path(__file__).resolve().parent
CFG = json.loads((HERE / "bundle.json").read_text())
OUT = Path(os.environ.get("DOCTUNE_OUTPUT", HERE / "output"))


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class Examples(Dataset):
    def __init__(self, rows, order=None):
        self.rows = rows
        self.order = order if order is not None else list(range(len(rows)))

    def __len__(self):
        return len(self.order)

    def __getitem__(self, i):
        return self.rows[self.order[i]]


def collate(rows):
    """Right padding (as DocTune pads): the pad positions carry no loss and are not attended."""
    width = max(len(r["input_ids"]) for r in rows)
    pad = CFG["padTokenId"]
    batch = {"input_ids": [], "attention_mask": [], "labels": []}
    for r in rows:
        n = width - len(r["input_ids"])
        batch["input_ids"].append(r["input_ids"] + [pad] * n)
        batch["attention_mask"].append(r["attention_mask"] + [0] * n)
        batch["labels"].append(r["labels"] + [-100] * n)
    return {k: torch.tensor(v) for k, v in batch.items()}


class InOrder(Trainer):
    """Visits the examples in data/order.json's order (the dataset is that order); with several
    processes, accelerate hands each one its share of every step's batches."""

    def _get_train_sampler(self, *args, **kwargs):
        return SequentialSampler(self.train_dataset)


class Metrics(TrainerCallback):
    """One line of output/metrics.jsonl per optimiser step, in DocTune's MetricsLine shape."""

    def __init__(self, examples_per_step, n_train):
        self.t0 = time.perf_counter()
        self.eval_loss = None
        # Epochs as DocTune counts them: examples seen over the training split's size.
        self.epoch_per_step = examples_per_step / max(n_train, 1)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or logs is None:
            return
        if "eval_loss" in logs:
            self.eval_loss = logs["eval_loss"]
        if "loss" not in logs:
            return
        elapsed = time.perf_counter() - self.t0
        line = {
            "step": state.global_step,
            "epoch": state.global_step * self.epoch_per_step,
            "loss": float(logs["loss"]),
            "lr": float(logs.get("learning_rate", 0.0)),
            "gradNorm": float(logs["grad_norm"]) if logs.get("grad_norm") is not None else None,
            "tokensPerSec": 0.0,
            "elapsedSecs": elapsed,
            "etaSecs": elapsed / max(state.global_step, 1) * max(state.max_steps - state.global_step, 0),
            "memBytes": 0,
        }
        if self.eval_loss is not None:
            line["evalLoss"] = float(self.eval_loss)
            self.eval_loss = None
        with open(OUT / "metrics.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")


def main():
    base = os.environ.get("DOCTUNE_BASE_MODEL") or CFG["baseModel"]["path"]
    if not Path(base).exists() and not os.environ.get("DOCTUNE_BASE_MODEL"):
        base = CFG["baseModel"].get("hubRepo") or base
    cuda = torch.cuda.is_available()
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[CFG["precision"]]
    if not cuda and dtype == torch.float16:
        dtype = torch.float32  # f16 needs a GPU (as in DocTune)
    OUT.mkdir(parents=True, exist_ok=True)
    if int(os.environ.get("RANK", "0")) == 0:
        (OUT / "metrics.jsonl").write_text("")
        # The settings travel with the result: `doctune runs import` reads them.
        (OUT / "bundle.json").write_text((HERE / "bundle.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32 if dtype == torch.float16 else dtype, attn_implementation="sdpa")
    lora = CFG.get("lora")
    if lora:
        from peft import LoraConfig, PeftModel, get_peft_model

        initial = HERE / "initial_adapter"
        if initial.is_dir():
            # DocTune's own seeded initialisation: the same starting point as `doctune train`.
            model = PeftModel.from_pretrained(model, str(initial), is_trainable=True)
        else:
            model = get_peft_model(model, LoraConfig(
                r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                target_modules=lora["targetModules"], use_rslora=lora["rslora"], task_type="CAUSAL_LM"))
    train_rows = read_jsonl(HERE / "data" / "train.jsonl")
    order = json.loads((HERE / "data" / "order.json").read_text())
    val_rows = read_jsonl(HERE / "data" / "val.jsonl")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_step = CFG["microBatch"] * CFG["gradAccum"]
    # The examples DocTune's run visits (its steps × micro-batch × accumulation), shared by the
    # processes: N processes make steps N times larger and N times fewer.
    steps = max(1, math.ceil(len(order) / (per_step * world)))
    if os.environ.get("DOCTUNE_MAX_STEPS"):
        steps = min(steps, int(os.environ["DOCTUNE_MAX_STEPS"]))
    order = order[: steps * per_step * world]
    schedule = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[CFG["schedule"]]
    args = TrainingArguments(
        output_dir=str(OUT / "trainer"),
        per_device_train_batch_size=CFG["microBatch"],
        per_device_eval_batch_size=CFG["microBatch"],
        gradient_accumulation_steps=CFG["gradAccum"],
        max_steps=steps,
        learning_rate=CFG["lr"],
        lr_scheduler_type=schedule,
        warmup_steps=CFG["warmupSteps"],
        weight_decay=CFG["weightDecay"],
        max_grad_norm=CFG["maxGradNorm"] if CFG["maxGradNorm"] is not None else 0.0,
        optim="adamw_torch",
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        seed=CFG["seed"],
        logging_steps=1,
        save_strategy="no",
        eval_strategy="steps" if CFG.get("evalEvery") and val_rows else "no",
        eval_steps=CFG.get("evalEvery") or None,
        bf16=cuda and dtype == torch.bfloat16,
        fp16=cuda and CFG["precision"] == "f16",
        gradient_checkpointing=CFG["gradientCheckpointing"],
        use_cpu=not cuda,
        ddp_backend=("nccl" if cuda else "gloo") if world > 1 else None,
        dataloader_drop_last=False,
        remove_unused_columns=False,
        report_to=[],
        disable_tqdm=True,
    )
    trainer = InOrder(
        model=model,
        args=args,
        train_dataset=Examples(train_rows, order),
        eval_dataset=Examples(val_rows) if val_rows else None,
        data_collator=collate,
        callbacks=[Metrics(per_step * world, len(train_rows))],
    )
    t0 = time.perf_counter()
    out = trainer.train()
    if trainer.is_world_process_zero():
        target = OUT / ("adapter" if lora else "model")
        trainer.model.save_pretrained(str(target), safe_serialization=True)
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        (OUT / "result.json").write_text(json.dumps({
            "trainer": "DocTune bundle train.py (transformers Trainer + PEFT)",
            "bundle": CFG["bundleId"],
            "worldSize": world,
            "steps": trainer.state.global_step,
            "losses": losses,
            "trainLoss": out.training_loss,
            "seconds": time.perf_counter() - t0,
            "output": target.name,
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()

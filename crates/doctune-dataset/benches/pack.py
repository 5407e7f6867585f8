"""Python side of `cargo bench -p doctune-dataset --bench pack`: the same tokenise + pack work with
Hugging Face `tokenizers` (through transformers' fast tokenizer) and `datasets.map`, the way
transformers' run_clm example does it (tokenise with EOS appended, then group_texts into blocks).
Needs `pip install transformers datasets` (not part of CI). Prints one JSON line."""
import json
import sys
import time

from datasets import Dataset
from transformers import PreTrainedTokenizerFast


def main():
    folder, corpus, seq_len = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tok = PreTrainedTokenizerFast(tokenizer_file=f"{folder}/tokenizer.json", bos_token="<s>", eos_token="</s>")
    with open(corpus) as f:
        texts = [json.loads(line)["text"] for line in f]
    ds = Dataset.from_dict({"text": texts})
    best = None
    for _ in range(2):
        t0 = time.perf_counter()

        def tokenize(batch):
            out = tok(batch["text"])
            out["input_ids"] = [ids + [tok.eos_token_id] for ids in out["input_ids"]]
            return {"input_ids": out["input_ids"]}

        tokenized = ds.map(tokenize, batched=True, remove_columns=["text"], keep_in_memory=True)

        def group_texts(batch):
            concat = [t for ids in batch["input_ids"] for t in ids]
            total = (len(concat) // seq_len) * seq_len
            return {"input_ids": [concat[i:i + seq_len] for i in range(0, total, seq_len)]}

        packed = tokenized.map(group_texts, batched=True, keep_in_memory=True)
        dt = time.perf_counter() - t0
        tokens = sum(len(x) for x in tokenized["input_ids"])
        best = dt if best is None else min(best, dt)
    print(json.dumps({"seconds": best, "tokens": tokens, "windows": len(packed), "tokens_per_sec": tokens / best}))


if __name__ == "__main__":
    main()

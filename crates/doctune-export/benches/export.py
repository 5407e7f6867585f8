"""The Python side of DocTune's export benchmark (benches/export.rs runs it; it needs numpy,
safetensors and gguf, and llama-cpp-python for the llama.cpp quantiser).

    export.py gguf-py BASE_DIR ADAPTER_DIR OUT.gguf
        What a Python export does for q8_0: PEFT's merge (W + scale * B @ A) of every adapted
        weight, convert_hf_to_gguf's Llama q/k permutation and names, gguf-py's Q8_0 quantiser,
        and gguf-py's writer streaming one tensor at a time (tensor infos first, as
        convert_hf_to_gguf's lazy tensors do). Tokenizer metadata is left out (it is small).
    export.py llama.cpp IN.gguf OUT.gguf FTYPE THREADS
        llama.cpp's own quantiser (llama_model_quantize) from an F32 GGUF.

Both end with an fsync of the file written (inside the timing), the guarantee DocTune's export
gives before it renames a finished export into place, so the two sides do the same I/O.

Prints one JSON line: {"seconds": ..., "peak_rss_bytes": ...}.
"""

import json
import os
import resource
import sys
import time


def peak_rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def gguf_py(base, adapter, out):
    import numpy as np
    import gguf
    from safetensors import safe_open

    start = time.perf_counter()
    cfg = json.load(open(os.path.join(base, "config.json")))
    acfg = json.load(open(os.path.join(adapter, "adapter_config.json")))
    rank = acfg["r"]
    scale = acfg["lora_alpha"] / (rank ** 0.5 if acfg.get("use_rslora") else rank)
    lora = safe_open(os.path.join(adapter, "adapter_model.safetensors"), "numpy")
    pairs = {}
    for key in lora.keys():
        # base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight -> model.layers.0.self_attn.q_proj.weight
        module, part = key.removeprefix("base_model.model.").rsplit(".lora_", 1)
        pairs.setdefault(module + ".weight", {})[part.split(".")[0]] = key
    heads, kv_heads = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
             "post_attention_layernorm": "ffn_norm"}

    def gguf_name(hf):
        if hf == "model.embed_tokens.weight":
            return "token_embd.weight"
        if hf == "model.norm.weight":
            return "output_norm.weight"
        if hf == "lm_head.weight":
            return "output.weight"
        _, _, layer, rest = hf.split(".", 3)
        return f"blk.{layer}.{names[rest.removesuffix('.weight')]}.weight"

    def permute(w, n_head):
        return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    def tensor(f, hf):
        w = f.get_tensor(hf).astype(np.float32)
        if hf in pairs:
            a = lora.get_tensor(pairs[hf]["A"]).astype(np.float32)
            b = lora.get_tensor(pairs[hf]["B"]).astype(np.float32)
            w = w + scale * (b @ a)
        if hf.endswith("q_proj.weight"):
            w = permute(w, heads)
        elif hf.endswith("k_proj.weight"):
            w = permute(w, kv_heads)
        if w.ndim == 1:
            return w
        return gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q8_0)

    files = sorted(n for n in os.listdir(base) if n.endswith(".safetensors"))
    handles = [safe_open(os.path.join(base, n), "numpy") for n in files]
    order = [(f, k) for f in handles for k in f.keys()]
    w = gguf.GGUFWriter(out, "llama")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    for f, k in order:
        shape = f.get_slice(k).get_shape()
        if len(shape) == 1:
            w.add_tensor_info(gguf_name(k), shape, np.float32, shape[0] * 4)
        else:
            byte_shape = (shape[0], shape[1] // 32 * 34)
            w.add_tensor_info(gguf_name(k), byte_shape, np.uint8, byte_shape[0] * byte_shape[1],
                              raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for f, k in order:
        w.write_tensor_data(tensor(f, k))
    w.close()
    fsync(out)
    return time.perf_counter() - start


def llama_cpp(src, out, ftype, threads):
    import llama_cpp

    start = time.perf_counter()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    if llama_cpp.llama_model_quantize(src.encode(), out.encode(), params) != 0:
        raise SystemExit("llama_model_quantize failed")
    fsync(out)
    return time.perf_counter() - start


def main():
    mode = sys.argv[1]
    if mode == "gguf-py":
        seconds = gguf_py(sys.argv[2], sys.argv[3], sys.argv[4])
    elif mode == "llama.cpp":
        # llama.cpp logs every tensor to stderr; the benchmark only wants the JSON line.
        seconds = llama_cpp(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps({"seconds": seconds, "peak_rss_bytes": peak_rss()}))


if __name__ == "__main__":
    main()

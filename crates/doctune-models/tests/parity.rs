//! Numerical parity with transformers and PEFT on a tiny random model of every family (the
//! fixtures and goldens come from `tests/fixtures/make_goldens.py`): logits, LoRA logits, loss
//! and LoRA gradients within 1e-4, greedy generation equal token for token; plus the properties
//! training relies on (every trainable variable gets a gradient, checkpointing changes nothing,
//! merge/unmerge round-trips, frozen weights get no gradient).

use candle_core::{DType, Device, Tensor};
use doctune_core::CancelToken;
use doctune_models::{
    causal_lm_loss, generate, load, load_adapter, GenerateOptions, LoadOptions, LoadedModel,
    LoraSpec, Sampling, Target,
};
use std::collections::HashMap;
use std::path::PathBuf;

const FAMILIES: [&str; 7] = [
    "llama",
    "llama_tied",
    "mistral",
    "qwen2",
    "qwen3",
    "phi3",
    "gemma2",
];
const TOL: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(crate_dir()).join("tests/fixtures").join(name)
}

fn golden(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(name).join("golden.safetensors"), &Device::Cpu).unwrap()
}

fn open(name: &str) -> LoadedModel {
    load(&fixture(name), &LoadOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    doctune_testkit::max_abs_diff(a, b) as f32
}

fn ids(g: &HashMap<String, Tensor>, key: &str) -> Tensor {
    g[key].to_dtype(DType::U32).unwrap()
}

fn u32s(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::U32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn logits_match_transformers() {
    for name in FAMILIES {
        let m = open(name);
        let g = golden(name);
        let logits = m.model.forward_eval(&ids(&g, "input_ids")).unwrap();
        let d = max_diff(&logits, &g["logits"]);
        assert!(d < TOL, "{name}: logits differ by {d}");
    }
}

#[test]
fn lora_logits_loss_and_gradients_match_peft() {
    for checkpointing in [false, true] {
        for name in FAMILIES {
            let mut m = open(name);
            let g = golden(name);
            load_adapter(&mut m.model, &fixture(name).join("adapter")).unwrap();
            m.model.set_gradient_checkpointing(checkpointing);
            let input = ids(&g, "input_ids");
            let logits = m.model.forward(&input).unwrap();
            let d = max_diff(&logits, &g["lora_logits"]);
            assert!(d < TOL, "{name}: LoRA logits differ by {d}");
            let loss = causal_lm_loss(&logits, &input, None).unwrap();
            let d = max_diff(&loss.reshape(1).unwrap(), &g["lora_loss"]);
            assert!(d < TOL, "{name}: loss differs by {d}");
            let grads = m.model.backward(&loss).unwrap();
            let vars = m.model.trainable_vars();
            assert!(!vars.is_empty());
            let expected = g.keys().filter(|k| k.starts_with("grad.")).count();
            assert_eq!(
                vars.len(),
                expected,
                "{name}: one variable per PEFT parameter"
            );
            for (vname, var) in vars {
                let want = g
                    .get(&format!("grad.{vname}"))
                    .unwrap_or_else(|| panic!("{name}: no golden gradient for {vname}"));
                let got = grads.get(&var).unwrap_or_else(|| {
                    panic!("{name}: {vname} got no gradient (ckpt {checkpointing})")
                });
                let d = max_diff(got, want);
                assert!(
                    d < TOL,
                    "{name}: gradient of {vname} differs by {d} (ckpt {checkpointing})"
                );
            }
        }
    }
}

/// Mixed precision as DocTune trains on GPUs (bf16 there; f16 here, the half type candle's CPU
/// matmul has): base weights and activations in half precision, LoRA matrices and fully trained
/// weights kept in f32 with f32 gradients, and results within half-precision rounding of
/// PEFT's f32 goldens.
#[test]
fn half_precision_keeps_f32_trainables_and_tracks_the_f32_goldens() {
    let largest = |t: &Tensor| max_diff(t, &t.zeros_like().unwrap());
    let half = LoadOptions {
        device: Device::Cpu,
        dtype: Some(DType::F16),
        matrix_dtype: None,
    };
    for name in FAMILIES {
        let g = golden(name);
        let input = ids(&g, "input_ids");
        let mut m = load(&fixture(name), &half).unwrap();
        assert_eq!(m.model.dtype(), DType::F16);
        load_adapter(&mut m.model, &fixture(name).join("adapter")).unwrap();
        let logits = m.model.forward(&input).unwrap();
        assert_eq!(logits.dtype(), DType::F16);
        let d = max_diff(&logits, &g["lora_logits"]);
        // Measured 0.010–0.019 (logits of order 1): a few f16 roundings per layer.
        assert!(d < 4e-2, "{name}: f16 LoRA logits differ by {d}");
        let loss = causal_lm_loss(&logits, &input, None).unwrap();
        assert_eq!(loss.dtype(), DType::F32);
        let d = max_diff(&loss.reshape(1).unwrap(), &g["lora_loss"]);
        assert!(d < 5e-3, "{name}: f16 loss differs by {d}");
        let grads = m.model.backward(&loss).unwrap();
        let mut worst = 0f32;
        for (vname, var) in m.model.trainable_vars() {
            assert_eq!(var.dtype(), DType::F32, "{name}: {vname}");
            let got = grads.get(&var).unwrap();
            assert_eq!(got.dtype(), DType::F32, "{name}: gradient of {vname}");
            let want = &g[&format!("grad.{vname}")];
            let rel = max_diff(got, want) / largest(want).max(1e-3);
            worst = worst.max(rel);
        }
        // Measured 0.006–0.017 of the largest gradient.
        assert!(
            worst < 5e-2,
            "{name}: f16 LoRA gradients off by {worst} (relative)"
        );

        // Full fine-tuning: f32 copies of every weight, f32 gradients through the casts.
        let mut m = load(&fixture(name), &half).unwrap();
        m.model.make_all_trainable().unwrap();
        let loss = causal_lm_loss(&m.model.forward(&input).unwrap(), &input, None).unwrap();
        let grads = m.model.backward(&loss).unwrap();
        for (vname, var) in m.model.trainable_vars() {
            assert_eq!(var.dtype(), DType::F32, "{name}: {vname}");
            let got = grads.get(&var).unwrap();
            assert_eq!(got.dtype(), DType::F32);
            assert!(
                largest(got) > 0.0,
                "{name}: {vname} has no gradient (f16 full)"
            );
        }
        // Saved weights keep the model's dtype.
        assert!(m
            .model
            .named_weights()
            .iter()
            .all(|(_, t)| t.dtype() == DType::F16));
    }
}

/// bf16 as DocTune trains in it on the CPU (PyTorch's CPU autocast): the frozen weight
/// matrices in bf16, activations, norms and biases in f32, every projection a bf16 product with
/// f32 sums (the AVX-512 BF16 kernel where the CPU has it, the portable path elsewhere); LoRA
/// matrices and their gradients in f32, and results within bf16 rounding of PEFT's f32
/// goldens.
#[test]
fn bf16_matrices_under_f32_activations_track_the_f32_goldens() {
    let largest = |t: &Tensor| max_diff(t, &t.zeros_like().unwrap());
    let opts = LoadOptions::for_training(Device::Cpu, doctune_models::Precision::Bf16);
    for name in FAMILIES {
        let g = golden(name);
        let input = ids(&g, "input_ids");
        let mut m = load(&fixture(name), &opts).unwrap();
        assert_eq!(m.model.dtype(), DType::F32);
        for (wname, t) in m.model.named_weights() {
            let want = if t.rank() == 2 {
                DType::BF16
            } else {
                DType::F32
            };
            assert_eq!(t.dtype(), want, "{name}: {wname}");
        }
        load_adapter(&mut m.model, &fixture(name).join("adapter")).unwrap();
        let logits = m.model.forward(&input).unwrap();
        assert_eq!(logits.dtype(), DType::F32);
        let d = max_diff(&logits, &g["lora_logits"]);
        // Measured 0.042–0.105 (logits of order 4): bf16 keeps 8 significant bits.
        assert!(d < 0.15, "{name}: bf16 LoRA logits differ by {d}");
        let loss = causal_lm_loss(&logits, &input, None).unwrap();
        let d = max_diff(&loss.reshape(1).unwrap(), &g["lora_loss"]);
        // Measured 2e-4–3.3e-3.
        assert!(d < 1e-2, "{name}: bf16 loss differs by {d}");
        let grads = m.model.backward(&loss).unwrap();
        let mut worst = 0f32;
        for (vname, var) in m.model.trainable_vars() {
            assert_eq!(var.dtype(), DType::F32, "{name}: {vname}");
            let got = grads.get(&var).unwrap();
            let want = &g[&format!("grad.{vname}")];
            worst = worst.max(max_diff(got, want) / largest(want).max(1e-3));
        }
        // Measured 0.021–0.076 of the largest gradient.
        assert!(
            worst < 0.15,
            "{name}: bf16 LoRA gradients off by {worst} (relative)"
        );
        // Evaluation and generation take the same products without a graph.
        let eval = m.model.forward_eval(&input).unwrap();
        assert!(max_diff(&eval, &g["lora_logits"]) < 0.15, "{name}: eval");

        // Full fine-tuning of such a model trains f32 copies and computes in f32.
        let mut m = load(&fixture(name), &opts).unwrap();
        m.model.make_all_trainable().unwrap();
        let loss = causal_lm_loss(&m.model.forward(&input).unwrap(), &input, None).unwrap();
        let grads = m.model.backward(&loss).unwrap();
        for (vname, var) in m.model.trainable_vars() {
            assert_eq!(var.dtype(), DType::F32, "{name}: {vname}");
            assert!(largest(grads.get(&var).unwrap()) > 0.0, "{name}: {vname}");
        }
    }
}

/// The fused CPU blocks (the SwiGLU MLP as one op) against the composed layers, on every
/// family (those they do not apply to run composed either way), with LoRA dropout drawn from
/// the same seed, with and without gradient checkpointing, over f32 and bf16 base weights:
/// logits, loss and every adapter gradient agree.
#[test]
fn fused_blocks_match_the_composed_layers() {
    let spec = LoraSpec {
        rank: 4,
        alpha: 8.0,
        dropout: 0.3,
        rslora: false,
    };
    for opts in [
        LoadOptions::default(),
        LoadOptions::for_training(Device::Cpu, doctune_models::Precision::Bf16),
    ] {
        // Adapters everywhere, and on the attention only (the default targets): the MLP's
        // projections then take its bf16 rows without f32 copies.
        let attention_only = [Target::Q, Target::V];
        for (name, targets) in FAMILIES
            .iter()
            .flat_map(|n| [(*n, &Target::ALL[..]), (*n, &attention_only[..])])
        {
            let g = golden(name);
            let input = ids(&g, "input_ids");
            for ckpt in [false, true] {
                let run = |fused: bool| {
                    let mut m = load(&fixture(name), &opts).unwrap();
                    m.model.add_lora(targets, &spec, 5).unwrap();
                    // Non-zero B, so every adapter's path carries a gradient to the others.
                    for (n, v) in m.model.trainable_vars() {
                        if n.ends_with("lora_B.weight") {
                            let k = v.elem_count();
                            let vals = doctune_models::rng::normal_vec(k, 0.1, 11);
                            v.set(&Tensor::from_vec(vals, v.shape(), &Device::Cpu).unwrap())
                                .unwrap();
                        }
                    }
                    m.model.set_gradient_checkpointing(ckpt);
                    m.model.set_fused_blocks(fused);
                    let logits = m
                        .model
                        .forward_train(&input, &mut doctune_models::rng::seeded(7))
                        .unwrap();
                    let loss = causal_lm_loss(&logits, &input, None).unwrap();
                    let grads = m.model.backward(&loss).unwrap();
                    let named: Vec<(String, Tensor)> = m
                        .model
                        .trainable_vars()
                        .into_iter()
                        .map(|(n, v)| {
                            let g = grads
                                .get(&v)
                                .unwrap_or_else(|| panic!("{name}: no gradient for {n}"));
                            (n, g.clone())
                        })
                        .collect();
                    (logits, loss, named)
                };
                let (l1, loss1, g1) = run(true);
                let (l2, loss2, g2) = run(false);
                let what = format!(
                    "{name} (targets {}, ckpt {ckpt}, {:?})",
                    targets.len(),
                    opts.matrix_dtype
                );
                assert!(
                    max_diff(&l1, &l2) < 1e-4,
                    "{what}: logits {}",
                    max_diff(&l1, &l2)
                );
                assert!(
                    max_diff(&loss1.reshape(1).unwrap(), &loss2.reshape(1).unwrap()) < 1e-5,
                    "{what}: loss"
                );
                assert_eq!(g1.len(), g2.len());
                for ((n, a), (_, b)) in g1.iter().zip(&g2) {
                    let d = max_diff(a, b);
                    let scale = max_diff(b, &b.zeros_like().unwrap()).max(1e-3);
                    assert!(d / scale < 1e-3, "{what}: gradient of {n} differs by {d}");
                }
            }
        }
    }
}

#[test]
fn greedy_generation_matches_transformers() {
    let prompt = "The quick brown fox reads a document about models";
    for name in FAMILIES {
        let m = open(name);
        let g = golden(name);
        let prompt_ids = m.tokenizer.encode(prompt, true).unwrap();
        assert_eq!(
            prompt_ids,
            u32s(&g["prompt_ids"]),
            "{name}: prompt encoding"
        );
        let opts = GenerateOptions {
            max_new_tokens: 32,
            sampling: Sampling::greedy(),
            stop_ids: m.tokenizer.stop_ids().to_vec(),
            stop_strings: vec![],
        };
        let mut streamed = String::new();
        let out = generate(
            &m.model,
            &m.tokenizer,
            &prompt_ids,
            &opts,
            &CancelToken::new(),
            &mut |s| streamed.push_str(s),
        )
        .unwrap();
        assert_eq!(out.token_ids, u32s(&g["greedy_ids"]), "{name}: greedy ids");
        assert_eq!(streamed, out.text, "{name}: streamed text is the text");
        let content: Vec<u32> = out
            .token_ids
            .iter()
            .copied()
            .filter(|id| !m.tokenizer.stop_ids().contains(id))
            .collect();
        assert_eq!(out.text, m.tokenizer.decode(&content, true).unwrap());
    }
}

#[test]
fn cached_generation_equals_full_forward() {
    // The KV cache path (one token at a time) gives the same last-position logits as a full
    // pass over the whole sequence — for sliding windows and LongRoPE's switch too.
    for name in ["mistral", "gemma2", "qwen3"] {
        let m = open(name);
        let g = golden(name);
        let input = ids(&g, "input_ids").narrow(0, 0, 1).unwrap();
        let full = m.model.forward_eval(&input).unwrap();
        let mut cache = m.model.new_cache();
        let t = input.dim(1).unwrap();
        let mut last = None;
        for i in 0..t {
            last = Some(
                m.model
                    .forward_cached(&input.narrow(1, i, 1).unwrap(), &mut cache)
                    .unwrap(),
            );
        }
        let d = max_diff(
            &last.unwrap().squeeze(1).unwrap(),
            &full.narrow(1, t - 1, 1).unwrap().squeeze(1).unwrap(),
        );
        assert!(d < TOL, "{name}: cached vs full {d}");
    }
}

#[test]
fn every_trainable_variable_gets_a_gradient() {
    for name in FAMILIES {
        // Fresh LoRA on every projection: B starts at zero, so A's gradient is zero at step 0
        // by construction (as in PEFT); B's must not be. After one nudge of B, A's must not be.
        let mut m = open(name);
        let spec = LoraSpec {
            rank: 4,
            alpha: 8.0,
            dropout: 0.0,
            rslora: false,
        };
        let n = m.model.add_lora(&Target::ALL, &spec, 1).unwrap();
        assert!(n >= 4, "{name}: {n} adapters");
        let g = golden(name);
        let input = ids(&g, "input_ids");
        let loss = causal_lm_loss(&m.model.forward(&input).unwrap(), &input, None).unwrap();
        let grads = m.model.backward(&loss).unwrap();
        for (vname, var) in m.model.trainable_vars() {
            let gnorm = grads.get(&var).map(|t| {
                t.sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            });
            if vname.contains("lora_B") {
                assert!(
                    gnorm.is_some_and(|n| n > 0.0),
                    "{name}: {vname} has no gradient"
                );
                var.set(&(grads.get(&var).unwrap() * -0.1).unwrap())
                    .unwrap();
            }
        }
        let loss = causal_lm_loss(&m.model.forward(&input).unwrap(), &input, None).unwrap();
        let grads = m.model.backward(&loss).unwrap();
        for (vname, var) in m.model.trainable_vars() {
            let gnorm = grads.get(&var).map(|t| {
                t.sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            });
            assert!(
                gnorm.is_some_and(|n| n > 0.0),
                "{name}: {vname} has no gradient"
            );
        }

        // Full fine-tuning: every weight of the model is a variable with a gradient.
        let mut m = open(name);
        m.model.make_all_trainable().unwrap();
        let loss = causal_lm_loss(&m.model.forward(&input).unwrap(), &input, None).unwrap();
        let grads = m.model.backward(&loss).unwrap();
        let vars = m.model.trainable_vars();
        assert_eq!(
            vars.len(),
            m.model.named_weights().len(),
            "{name}: all weights trainable"
        );
        for (vname, var) in vars {
            let gnorm = grads.get(&var).map(|t| {
                t.sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            });
            assert!(
                gnorm.is_some_and(|n| n > 0.0),
                "{name}: {vname} has no gradient (full)"
            );
        }
    }
}

#[test]
fn merge_and_unmerge_round_trip() {
    for name in ["llama", "phi3"] {
        let mut m = open(name);
        let g = golden(name);
        load_adapter(&mut m.model, &fixture(name).join("adapter")).unwrap();
        let input = ids(&g, "input_ids");
        let before = m.model.named_weights();
        m.model.merge_lora().unwrap();
        m.model.merge_lora().unwrap(); // idempotent
        let d = max_diff(&m.model.forward_eval(&input).unwrap(), &g["lora_logits"]);
        assert!(d < TOL, "{name}: merged logits differ by {d}");
        let merged = m.model.named_weights();
        let changed = before
            .iter()
            .zip(&merged)
            .filter(|((_, a), (_, b))| max_diff(a, b) > 0.0)
            .count();
        assert_eq!(
            changed,
            m.model
                .linears()
                .iter()
                .filter(|l| l.lora.is_some())
                .count()
        );
        m.model.unmerge_lora().unwrap();
        m.model.unmerge_lora().unwrap();
        // The adapter is active again (not merged) and the base weights are back.
        let d = max_diff(&m.model.forward_eval(&input).unwrap(), &g["lora_logits"]);
        assert!(d < TOL, "{name}: unmerged logits differ by {d}");
        for ((n, a), (_, b)) in before.iter().zip(m.model.named_weights().iter()) {
            assert!(max_diff(a, b) < 1e-6, "{name}: {n} not restored");
        }
    }
}

#[test]
fn checkpointing_keeps_full_fine_tuning_gradients() {
    let g = golden("gemma2");
    let input = ids(&g, "input_ids");
    let grads_of = |ckpt: bool| {
        let mut m = open("gemma2");
        m.model.make_all_trainable().unwrap();
        m.model.set_gradient_checkpointing(ckpt);
        let loss = causal_lm_loss(&m.model.forward(&input).unwrap(), &input, None).unwrap();
        let grads = m.model.backward(&loss).unwrap();
        m.model
            .trainable_vars()
            .into_iter()
            .map(|(n, v)| (n, grads.get(&v).unwrap().clone()))
            .collect::<Vec<_>>()
    };
    for ((n, a), (_, b)) in grads_of(false).iter().zip(grads_of(true).iter()) {
        let d = max_diff(a, b);
        assert!(d < 1e-5, "{n}: checkpointed gradient differs by {d}");
    }
}

#[test]
fn lora_init_is_peft_and_dropout_is_seeded() {
    let mut m = open("llama");
    let spec = LoraSpec {
        rank: 4,
        alpha: 8.0,
        dropout: 0.3,
        rslora: false,
    };
    m.model.add_lora(&[Target::Q, Target::V], &spec, 5).unwrap();
    let bound = 1.0 / (m.model.config().hidden_size as f32).sqrt();
    for (name, var) in m.model.trainable_vars() {
        let v: Vec<f32> = var.flatten_all().unwrap().to_vec1().unwrap();
        if name.contains("lora_A") {
            // Kaiming-uniform with a = √5: U(±1/√fan_in), and not degenerate.
            assert!(v.iter().all(|x| x.abs() <= bound), "{name}");
            assert!(v.iter().any(|x| x.abs() > bound / 2.0), "{name}");
        } else {
            assert!(v.iter().all(|&x| x == 0.0), "{name}: B starts at zero");
        }
    }
    // Give B values so the adapter (and its dropout) changes the output.
    for (name, var) in m.model.trainable_vars() {
        if name.contains("lora_B") {
            let n = var.elem_count();
            let v = doctune_models::rng::normal_vec(n, 0.5, 9);
            var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    let g = golden("llama");
    let input = ids(&g, "input_ids");
    let eval = m.model.forward(&input).unwrap();
    let train = |seed| {
        m.model
            .forward_train(&input, &mut doctune_models::rng::seeded(seed))
            .unwrap()
    };
    assert!(
        max_diff(&train(1), &eval) > 1e-3,
        "dropout changes the training pass"
    );
    assert_eq!(max_diff(&train(1), &train(1)), 0.0, "same seed, same masks");
    assert!(max_diff(&train(1), &train(2)) > 1e-3);

    // Checkpointing replays the same dropout masks: same gradients as without.
    let grads_of = |m: &mut LoadedModel, ckpt: bool| {
        m.model.set_gradient_checkpointing(ckpt);
        let logits = m
            .model
            .forward_train(&input, &mut doctune_models::rng::seeded(3))
            .unwrap();
        let loss = causal_lm_loss(&logits, &input, None).unwrap();
        let grads = m.model.backward(&loss).unwrap();
        m.model
            .trainable_vars()
            .into_iter()
            .map(|(_, v)| grads.get(&v).unwrap().clone())
            .collect::<Vec<_>>()
    };
    let plain = grads_of(&mut m, false);
    let ckpt = grads_of(&mut m, true);
    for (a, b) in plain.iter().zip(&ckpt) {
        assert!(max_diff(a, b) < 1e-5);
    }
}

#[test]
fn generation_stops_on_stop_strings_and_cancel() {
    let m = open("qwen3");
    let g = golden("qwen3");
    let prompt = u32s(&g["prompt_ids"]);
    let full = m.tokenizer.decode(&u32s(&g["greedy_ids"]), true).unwrap();
    // A stop string from the middle of the greedy text: the output ends right before it.
    let cut = full.char_indices().nth(full.chars().count() / 2).unwrap().0;
    let stop: String = full[cut..].chars().take(3).collect();
    let opts = GenerateOptions {
        max_new_tokens: 32,
        sampling: Sampling::greedy(),
        stop_ids: m.tokenizer.stop_ids().to_vec(),
        stop_strings: vec![stop.clone()],
    };
    let mut streamed = String::new();
    let out = generate(
        &m.model,
        &m.tokenizer,
        &prompt,
        &opts,
        &CancelToken::new(),
        &mut |s| streamed.push_str(s),
    )
    .unwrap();
    assert_eq!(out.stop_reason, doctune_models::StopReason::StopString);
    assert_eq!(out.text, full[..full.find(&stop).unwrap()]);
    assert_eq!(
        streamed, out.text,
        "nothing of the stop string was streamed"
    );

    // Cancelled from the callback: generation ends at the next step.
    let cancel = CancelToken::new();
    let mut opts = opts;
    opts.stop_strings.clear();
    let c = cancel.clone();
    let out = generate(&m.model, &m.tokenizer, &prompt, &opts, &cancel, &mut |_| {
        c.cancel()
    })
    .unwrap();
    assert_eq!(out.stop_reason, doctune_models::StopReason::Cancelled);
    assert!(out.token_ids.len() < 32);
}

/// This crate's folder, read when the test runs (cargo sets it then too): a test binary that
/// cargo reuses from a build in another checkout sharing the target folder must read this
/// checkout's fixtures, not that one's.
fn crate_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}

//! Every export, re-read by DocTune's own loaders: the PEFT adapter loads and gives the run's
//! logits; the merged model's logits equal base + adapter; every GGUF tensor dequantises within
//! its type's error of the merged weight (after the layout changes llama.cpp expects); the
//! metadata says what llama.cpp needs; the GGUF LoRA adds up to the merged model; the Modelfile's
//! TEMPLATE renders what the model's own chat template renders; exports are atomic, refuse to
//! overwrite, check disk space and stop on cancel leaving nothing. (The programs the formats are
//! for — peft, transformers, llama.cpp — check them in `tests/fixtures/oracle.py`.)

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use doctune_core::{CancelToken, JobEvent, NullSink, ProgressSink};
use doctune_export::{export, Dtype, ExportError, ExportOptions, ExportRequest, Format, Quant};
use doctune_models::{LoadOptions, Target};
use doctune_train::Method;
use std::path::{Path, PathBuf};

mod support;
use support::{crate_dir, fixture};

const FAMILIES: [&str; 7] = [
    "llama",
    "llama_tied",
    "mistral",
    "qwen2",
    "qwen3",
    "phi3",
    "gemma2",
];

/// A short LoRA (or full) run of the fixture model `family` in `dir`; returns the run folder.
fn train_run(dir: &Path, family: &str, method: Method, steps: u64) -> PathBuf {
    support::train_on(dir, &fixture(family), method, steps)
}

fn lora() -> Method {
    Method::Lora {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        rslora: false,
        targets: Target::ALL.to_vec(),
    }
}

fn request(run: &Path, out: &Path, format: Format) -> ExportRequest {
    ExportRequest {
        run_dir: run.to_path_buf(),
        out: out.to_path_buf(),
        base_name: Some("org/tiny".into()),
        options: ExportOptions {
            format,
            quant: Quant::F16,
            dtype: Dtype::F32,
            checkpoint: None,
            system: None,
            overwrite: false,
        },
    }
}

fn unknown_disk(_: &Path) -> Option<u64> {
    None
}

/// `req` exported with no disk check, no progress and no cancel.
fn export_now(req: &ExportRequest) -> Result<doctune_export::ExportReport, ExportError> {
    export(req, &unknown_disk, &NullSink, &CancelToken::new())
}

fn ids() -> Tensor {
    Tensor::new(&[[1u32, 40, 77, 12, 200, 5, 9, 31]], &Device::Cpu).unwrap()
}

fn logits(dir: &Path, adapter: Option<&Path>) -> Tensor {
    let mut m = doctune_models::load(dir, &LoadOptions::default()).unwrap();
    if let Some(a) = adapter {
        doctune_models::load_adapter(&mut m.model, a).unwrap();
    }
    m.model.forward_eval(&ids()).unwrap()
}

#[test]
fn merged_and_peft_exports_reproduce_the_adapted_model_for_every_family() {
    for family in FAMILIES {
        let d = tempfile::tempdir().unwrap();
        let run = train_run(d.path(), family, lora(), 4);
        let adapted = logits(&fixture(family), Some(&run.join("adapter")));

        let merged = d.path().join("merged");
        let r = export_now(&request(&run, &merged, Format::Merged)).unwrap();
        let diff = doctune_testkit::max_abs_diff(&logits(&merged, None), &adapted);
        assert!(
            diff < 1e-4,
            "{family}: merged logits differ from base + adapter by {diff}"
        );
        for f in [
            "config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "README.md",
            "manifest.json",
        ] {
            assert!(merged.join(f).is_file(), "{family}: {f}");
        }
        assert!(r.files.iter().any(|f| f.path == "model.safetensors"));
        // The weights were hashed as they were written: the hashes are those of the files.
        for f in &r.files {
            let (sha, n) = doctune_export::manifest::hash_file(&merged.join(&f.path)).unwrap();
            assert_eq!(
                (f.sha256.as_str(), f.bytes),
                (sha.as_str(), n),
                "{}",
                f.path
            );
        }

        let peft = d.path().join("peft");
        export_now(&request(&run, &peft, Format::Peft)).unwrap();
        let diff = doctune_testkit::max_abs_diff(&logits(&fixture(family), Some(&peft)), &adapted);
        assert!(diff < 1e-6, "{family}: exported adapter differs by {diff}");
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(peft.join("adapter_config.json")).unwrap())
                .unwrap();
        assert_eq!(cfg["peft_type"], "LORA");
        assert_eq!(cfg["base_model_name_or_path"], "org/tiny");
        assert_eq!(cfg["r"], 4);
    }
}

#[test]
fn merged_dtypes_checkpoints_and_full_runs() {
    let d = tempfile::tempdir().unwrap();
    let run = train_run(d.path(), "qwen3", lora(), 4);
    // bf16: config says so, tensors are bf16, logits close to f32's.
    let out = d.path().join("bf16");
    let mut req = request(&run, &out, Format::Merged);
    req.options.dtype = Dtype::Bf16;
    export_now(&req).unwrap();
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["dtype"], "bfloat16");
    let st = candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap();
    assert!(st.values().all(|t| t.dtype() == DType::BF16));
    // A checkpoint exports its own weights, not the final ones.
    let early = d.path().join("step2");
    let mut req = request(&run, &early, Format::Merged);
    req.options.checkpoint = Some(2);
    export_now(&req).unwrap();
    let final_dir = d.path().join("final");
    export_now(&request(&run, &final_dir, Format::Merged)).unwrap();
    assert!(doctune_testkit::max_abs_diff(&logits(&early, None), &logits(&final_dir, None)) > 1e-6);
    let mut req = request(&run, &d.path().join("nope"), Format::Merged);
    req.options.checkpoint = Some(3);
    let e = export_now(&req).unwrap_err().to_string();
    assert!(
        e.contains("no checkpoint of step 3") && e.contains("2, 4"),
        "{e}"
    );

    // Full fine-tuning: the merged weights are the checkpoint's.
    let d2 = tempfile::tempdir().unwrap();
    let full = train_run(d2.path(), "llama_tied", Method::Full, 2);
    let out = d2.path().join("full");
    export_now(&request(&full, &out, Format::Merged)).unwrap();
    let got = candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap();
    let ckpt = candle_core::safetensors::load(
        full.join("checkpoints/step-00000002/trainable.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    for (name, t) in &ckpt {
        assert_eq!(doctune_testkit::max_abs_diff(&got[name], t), 0.0, "{name}");
    }
    let e = export_now(&request(&full, &d2.path().join("p"), Format::Peft))
        .unwrap_err()
        .to_string();
    assert!(e.contains("full fine-tuning run has no adapter"), "{e}");
}

/// What a GGUF tensor must hold: the merged weight, laid out as llama.cpp expects.
fn expected_gguf(merged: &Path, name: &str) -> Option<Vec<f32>> {
    let cfg = doctune_models::ModelConfig::load(merged).unwrap();
    let st =
        candle_core::safetensors::load(merged.join("model.safetensors"), &Device::Cpu).unwrap();
    let hf = st.keys().find(|k| {
        doctune_export::gguf::arch::tensor_name(k, cfg.family).as_deref() == Some(name)
    })?;
    let t = &st[hf];
    let cols = *t.dims().last().unwrap();
    let mut data: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    let arch = doctune_export::gguf::arch::Arch::of(&cfg);
    doctune_export::gguf::arch::transform(&arch, &cfg, hf, &mut data, cols);
    Some(data)
}

fn read_gguf(path: &Path) -> (gguf_file::Content, std::fs::File) {
    let mut f = std::fs::File::open(path).unwrap();
    let c = gguf_file::Content::read(&mut f).unwrap();
    (c, f)
}

#[test]
fn gguf_files_hold_the_merged_weights_and_llama_cpps_metadata() {
    for family in FAMILIES {
        let d = tempfile::tempdir().unwrap();
        let run = train_run(d.path(), family, lora(), 4);
        let merged = d.path().join("merged");
        export_now(&request(&run, &merged, Format::Merged)).unwrap();
        let cfg = doctune_models::ModelConfig::load(&merged).unwrap();
        for quant in [Quant::F16, Quant::Q8_0, Quant::Q4KM] {
            let out = d.path().join(format!("gguf-{}", quant.label()));
            let mut req = request(&run, &out, Format::Gguf);
            req.options.quant = quant;
            let report = export_now(&req).unwrap();
            let mut unique = report.warnings.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(
                unique.len(),
                report.warnings.len(),
                "{family}: a warning repeated: {:?}",
                report.warnings
            );
            let file = report
                .files
                .iter()
                .find(|f| f.path.ends_with(".gguf"))
                .unwrap();
            assert!(
                file.path.ends_with(&format!("-{}.gguf", quant.label())),
                "{}",
                file.path
            );
            let (c, mut f) = read_gguf(&out.join(&file.path));
            let md = |k: &str| {
                c.metadata
                    .get(k)
                    .unwrap_or_else(|| panic!("{family}: no {k}"))
            };
            let arch = md("general.architecture").to_string().unwrap().clone();
            let want_arch = match family {
                "llama" | "llama_tied" | "mistral" => "llama",
                f => f,
            };
            assert_eq!(arch, want_arch);
            assert_eq!(md("general.file_type").to_u32().unwrap(), quant.file_type());
            assert_eq!(
                md(&format!("{arch}.block_count")).to_u32().unwrap() as usize,
                cfg.num_layers
            );
            assert_eq!(
                md(&format!("{arch}.attention.key_length"))
                    .to_u32()
                    .unwrap() as usize,
                cfg.head_dim
            );
            assert!(
                (md(&format!("{arch}.attention.layer_norm_rms_epsilon"))
                    .to_f32()
                    .unwrap() as f64
                    - cfg.rms_norm_eps)
                    .abs()
                    < 1e-9
            );
            assert_eq!(md("tokenizer.ggml.model").to_string().unwrap(), "gpt2");
            let pre = md("tokenizer.ggml.pre").to_string().unwrap();
            assert_eq!(
                pre, "gpt-2",
                "{family}: the fixtures' byte-level tokenizer splits as GPT-2's"
            );
            assert_eq!(
                md("tokenizer.ggml.tokens").to_vec().unwrap().len(),
                cfg.vocab_size
            );
            assert_eq!(
                md("tokenizer.ggml.token_type").to_vec().unwrap().len(),
                cfg.vocab_size
            );
            assert!(!md("tokenizer.ggml.merges").to_vec().unwrap().is_empty());
            assert_eq!(md("tokenizer.ggml.bos_token_id").to_u32().unwrap(), 1);
            assert_eq!(md("tokenizer.ggml.eos_token_id").to_u32().unwrap(), 2);
            assert_eq!(
                md("tokenizer.ggml.eot_token_id").to_u32().unwrap(),
                4,
                "{family}: <|im_end|>"
            );
            assert!(md("tokenizer.ggml.add_bos_token").to_bool().unwrap());
            assert!(md("tokenizer.chat_template")
                .to_string()
                .unwrap()
                .contains("im_start"));
            if family == "gemma2" {
                assert!((md("gemma2.attn_logit_softcapping").to_f32().unwrap() - 2.0).abs() < 1e-6);
                assert_eq!(md("gemma2.attention.sliding_window").to_u32().unwrap(), 4);
            }
            if family == "phi3" {
                assert_eq!(
                    md("phi3.rope.dimension_count").to_u32().unwrap() as usize,
                    cfg.rotary_dim()
                );
                assert!(c.tensor_infos.contains_key("rope_factors_long.weight"));
                assert!(c.tensor_infos.contains_key("blk.0.attn_qkv.weight"));
            }
            if family == "llama" {
                assert!(
                    c.tensor_infos.contains_key("rope_freqs.weight"),
                    "Llama 3 rope scaling"
                );
            }
            // Tied embeddings: no output tensor.
            assert_eq!(
                c.tensor_infos.contains_key("output.weight"),
                !cfg.tie_word_embeddings,
                "{family}"
            );
            for (name, info) in &c.tensor_infos {
                let q = c.tensor(&mut f, name, &Device::Cpu).unwrap();
                let got: Vec<f32> = q
                    .dequantize(&Device::Cpu)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                if name.ends_with("_norm.weight") || info.shape.dims().len() == 1 {
                    assert_eq!(
                        info.ggml_dtype,
                        candle_core::quantized::GgmlDType::F32,
                        "{name}"
                    );
                }
                let Some(want) = expected_gguf(&merged, name) else {
                    continue; // rope factors
                };
                let rms = (want.iter().map(|x| x * x).sum::<f32>() / want.len() as f32)
                    .sqrt()
                    .max(1e-6);
                let err = (want
                    .iter()
                    .zip(&got)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f32>()
                    / want.len() as f32)
                    .sqrt();
                let bound = match info.ggml_dtype {
                    candle_core::quantized::GgmlDType::F32 => 1e-7,
                    candle_core::quantized::GgmlDType::F16 => 2e-3,
                    candle_core::quantized::GgmlDType::Q8_0 => 2e-2,
                    candle_core::quantized::GgmlDType::Q6K => 5e-2,
                    _ => 0.2,
                };
                assert!(
                    err <= bound * rms,
                    "{family} {} {name} {:?}: relative error {}",
                    quant.label(),
                    info.ggml_dtype,
                    err / rms
                );
            }
            if quant == Quant::Q4KM {
                // Rows of 32 do not divide into 256-element K blocks: every K tensor falls back.
                assert!(!report.fallbacks.is_empty());
                assert!(report
                    .fallbacks
                    .iter()
                    .all(|f| f.reason.contains("do not divide")));
            }
        }
    }
}

#[test]
fn q4_k_m_follows_llama_cpps_mix_on_a_model_of_real_widths() {
    let d = tempfile::tempdir().unwrap();
    let base = support::random_llama(
        &d.path().join("base"),
        &doctune_testkit::models::RandomLlama {
            hidden: 256,
            layers: 8,
            heads: 4,
            kv_heads: 4,
            intermediate: 512,
            vocab: 320,
        },
    );
    let run = support::train_on(d.path(), &base, lora(), 1);
    let out = d.path().join("q4");
    let mut req = request(&run, &out, Format::Gguf);
    req.options.quant = Quant::Q4KM;
    let report = export_now(&req).unwrap();
    assert!(report.fallbacks.is_empty(), "{:?}", report.fallbacks);
    let (c, _) = read_gguf(
        &out.join(
            &report
                .files
                .iter()
                .find(|f| f.path.ends_with(".gguf"))
                .unwrap()
                .path,
        ),
    );
    use candle_core::quantized::GgmlDType as G;
    let ty = |n: &str| c.tensor_infos[n].ggml_dtype;
    // Tied embedding = output: Q6_K. attn_v / ffn_down: Q6_K on layers 0, 3, 6, 7 of 8.
    assert_eq!(ty("token_embd.weight"), G::Q6K);
    for l in 0..8 {
        let more = [0, 3, 6, 7].contains(&l);
        let want = if more { G::Q6K } else { G::Q4K };
        assert_eq!(ty(&format!("blk.{l}.attn_v.weight")), want, "attn_v {l}");
        assert_eq!(
            ty(&format!("blk.{l}.ffn_down.weight")),
            want,
            "ffn_down {l}"
        );
        assert_eq!(ty(&format!("blk.{l}.attn_q.weight")), G::Q4K);
        assert_eq!(ty(&format!("blk.{l}.attn_norm.weight")), G::F32);
    }
    assert_eq!(c.metadata["general.file_type"].to_u32().unwrap(), 15);
}

#[test]
fn the_gguf_lora_adds_up_to_the_merged_model() {
    for family in ["llama", "qwen2", "phi3", "gemma2"] {
        let d = tempfile::tempdir().unwrap();
        let run = train_run(d.path(), family, lora(), 4);
        let mut req = request(&run, &d.path().join("base"), Format::Gguf);
        req.options.quant = Quant::F32;
        let merged = export_now(&req).unwrap();
        let mut lreq = request(&run, &d.path().join("lora"), Format::GgufLora);
        lreq.options.quant = Quant::F32;
        let lora_out = export_now(&lreq).unwrap();
        let (mc, mut mf) = read_gguf(
            &d.path().join("base").join(
                &merged
                    .files
                    .iter()
                    .find(|f| f.path.ends_with(".gguf"))
                    .unwrap()
                    .path,
            ),
        );
        let (lc, mut lf) = read_gguf(
            &d.path().join("lora").join(
                &lora_out
                    .files
                    .iter()
                    .find(|f| f.path.ends_with(".gguf"))
                    .unwrap()
                    .path,
            ),
        );
        assert_eq!(lc.metadata["general.type"].to_string().unwrap(), "adapter");
        assert_eq!(lc.metadata["adapter.type"].to_string().unwrap(), "lora");
        assert_eq!(
            lc.metadata["general.architecture"].to_string().unwrap(),
            mc.metadata["general.architecture"].to_string().unwrap()
        );
        let alpha = lc.metadata["adapter.lora.alpha"].to_f32().unwrap();
        assert_eq!(alpha, 8.0);
        // base (the fixture, transformed) + alpha/rank · B·A = the merged GGUF tensor.
        let cfg = doctune_models::ModelConfig::load(&fixture(family)).unwrap();
        let arch = doctune_export::gguf::arch::Arch::of(&cfg);
        let base_st = doctune_models::WeightReader::model(&fixture(family)).unwrap();
        let mut checked = 0;
        for name in lc.tensor_infos.keys().filter(|n| n.ends_with(".lora_a")) {
            let w = name.trim_end_matches(".lora_a");
            let a = lc
                .tensor(&mut lf, name, &Device::Cpu)
                .unwrap()
                .dequantize(&Device::Cpu)
                .unwrap();
            let b = lc
                .tensor(&mut lf, &format!("{w}.lora_b"), &Device::Cpu)
                .unwrap()
                .dequantize(&Device::Cpu)
                .unwrap();
            let delta: Vec<f32> = (b.matmul(&a).unwrap() * (alpha as f64 / 4.0))
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let hf = base_st
                .names()
                .find(|n| {
                    doctune_export::gguf::arch::tensor_name(n, cfg.family).as_deref() == Some(w)
                })
                .unwrap()
                .to_string();
            let bt = base_st
                .load(&hf, &Device::Cpu)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
            let cols = *bt.dims().last().unwrap();
            let mut base: Vec<f32> = bt.flatten_all().unwrap().to_vec1().unwrap();
            doctune_export::gguf::arch::transform(&arch, &cfg, &hf, &mut base, cols);
            let merged: Vec<f32> = mc
                .tensor(&mut mf, w, &Device::Cpu)
                .unwrap()
                .dequantize(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let worst = base
                .iter()
                .zip(&delta)
                .zip(&merged)
                .map(|((x, dx), m)| (x + dx - m).abs())
                .fold(0f32, f32::max);
            assert!(
                worst < 1e-4,
                "{family} {w}: base + LoRA differs from merged by {worst}"
            );
            checked += 1;
        }
        assert!(checked > 0);
    }
}

/// Renders a Modelfile TEMPLATE as Ollama does (Go text/template; `slice` is Go's builtin).
fn render_go(template: &str, system: Option<&str>, msgs: &[(&str, &str)]) -> String {
    use gtmpl_value::Value;
    use std::collections::HashMap;
    fn slice(args: &[Value]) -> Result<Value, gtmpl_value::FuncError> {
        match (&args[0], &args[1]) {
            (Value::Array(a), Value::Number(n)) => {
                let i = n.as_u64().unwrap_or(0) as usize;
                Ok(Value::Array(a[i.min(a.len())..].to_vec()))
            }
            _ => Err(gtmpl_value::FuncError::Generic(
                "slice: bad arguments".into(),
            )),
        }
    }
    let mut t = gtmpl::Template::default();
    t.add_func("slice", slice);
    t.parse(template).unwrap();
    let mut all: Vec<(&str, &str)> = Vec::new();
    if let Some(s) = system {
        all.push(("system", s));
    }
    all.extend_from_slice(msgs);
    let messages: Vec<Value> = all
        .iter()
        .map(|(r, c)| {
            let mut m = HashMap::new();
            m.insert("Role".to_string(), Value::String(r.to_string()));
            m.insert("Content".to_string(), Value::String(c.to_string()));
            Value::Object(m)
        })
        .collect();
    let mut ctx = HashMap::new();
    ctx.insert(
        "System".to_string(),
        Value::String(system.unwrap_or("").to_string()),
    );
    ctx.insert("Messages".to_string(), Value::Array(messages));
    t.render(&gtmpl::Context::from(Value::Object(ctx))).unwrap()
}

#[test]
fn the_modelfile_template_renders_what_the_models_template_renders() {
    let templates = Path::new(&crate_dir()).join("../doctune-dataset/tests/fixtures/templates");
    let bos = |name: &str| match name {
        "llama3.jinja" | "llama3.1.jinja" => Some("<|begin_of_text|>"),
        "gemma2.jinja" => Some("<bos>"),
        "mistral-v0.3.jinja" => Some("<s>"),
        _ => None,
    };
    let mut seen = Vec::new();
    for e in std::fs::read_dir(&templates).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let source = std::fs::read_to_string(&p).unwrap();
        let eos = match name.as_str() {
            "mistral-v0.3.jinja" => "</s>",
            _ => "<eos>",
        };
        let t =
            doctune_tokenizer::ChatTemplate::from_source(&source, bos(&name), Some(eos)).unwrap();
        let chat = doctune_export::ollama::chat_for(&t, bos(&name), Some(eos)).unwrap();
        let turns = [
            ("user", "What is DocTune?"),
            ("assistant", "A fine-tuning app."),
            ("user", "Does it need a server?"),
        ];
        for system in [None, Some("You answer in one line.")] {
            let mut msgs = Vec::new();
            if let Some(s) = system {
                msgs.push(doctune_tokenizer::Message::new("system", s));
            }
            msgs.extend(
                turns
                    .iter()
                    .map(|(r, c)| doctune_tokenizer::Message::new(r, c)),
            );
            let Ok(jinja) = t.render(&msgs, true) else {
                assert!(name.starts_with("gemma"), "{name} refused a system message");
                continue;
            };
            let jinja = jinja
                .strip_prefix(bos(&name).unwrap_or(""))
                .unwrap()
                .to_string();
            let go = render_go(&chat.template, system, &turns);
            assert_eq!(
                go, jinja,
                "{name} (system: {system:?})\ntemplate: {}",
                chat.template
            );
        }
        let marker = t.end_of_turn().unwrap();
        assert!(
            chat.stops.contains(&marker),
            "{name}: {:?} lacks {marker}",
            chat.stops
        );
        seen.push(chat.style.unwrap());
    }
    use doctune_export::ollama::Style;
    for s in [
        Style::Llama3,
        Style::ChatMl,
        Style::Phi3,
        Style::Gemma,
        Style::Mistral,
    ] {
        assert!(seen.contains(&s), "{s:?} not covered");
    }
}

#[test]
fn ollama_exports_write_a_modelfile_beside_the_gguf() {
    let d = tempfile::tempdir().unwrap();
    let run = train_run(d.path(), "qwen2", lora(), 2);
    let out = d.path().join("My Model");
    let mut req = request(&run, &out, Format::Ollama);
    req.options.quant = Quant::Q8_0;
    req.options.system = Some("Answer from the handbook.".into());
    let r = export_now(&req).unwrap();
    let mf = std::fs::read_to_string(out.join("Modelfile")).unwrap();
    let gguf = r.files.iter().find(|f| f.path.ends_with(".gguf")).unwrap();
    assert!(mf.contains(&format!("FROM ./{}\n", gguf.path)), "{mf}");
    assert!(mf.contains("PARAMETER stop \"<|im_end|>\""), "{mf}");
    assert!(mf.contains("SYSTEM \"\"\"Answer from the handbook.\"\"\""));
    assert!(mf.contains("TEMPLATE \"\"\""));
    assert!(r
        .ollama_create
        .as_deref()
        .unwrap()
        .starts_with("ollama create my-model -f "));
    // The manifest lists every file with its sha256, and the card the documents and a warning.
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let listed: Vec<&str> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(listed.contains(&"Modelfile") && listed.contains(&"README.md"));
    for f in m["files"].as_array().unwrap() {
        let (sha, n) =
            doctune_export::manifest::hash_file(&out.join(f["path"].as_str().unwrap())).unwrap();
        assert_eq!(f["sha256"], sha.as_str());
        assert_eq!(f["bytes"], n);
    }
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(
        card.contains("qa.jsonl") && card.contains("reproduce"),
        "{card}"
    );
    assert!(card.contains("LoRA, rank 4"));
}

#[test]
fn exports_are_atomic_refuse_to_overwrite_and_check_the_disk() {
    let d = tempfile::tempdir().unwrap();
    let run = train_run(d.path(), "qwen3", lora(), 2);
    let exports = d.path().join("exports");
    let out = exports.join("e1");
    export_now(&request(&run, &out, Format::Merged)).unwrap();
    let before = std::fs::read(out.join("model.safetensors")).unwrap();
    let e = export_now(&request(&run, &out, Format::Gguf)).unwrap_err();
    assert!(matches!(e, ExportError::Exists { .. }), "{e}");
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        before
    );
    // Overwrite when asked: the old export is replaced whole.
    let mut req = request(&run, &out, Format::Gguf);
    req.options.overwrite = true;
    export_now(&req).unwrap();
    assert!(!out.join("model.safetensors").exists());
    // Not enough disk: refused before anything is written.
    let tiny = |_: &Path| Some(1024u64);
    let e = export(
        &request(&run, &exports.join("e2"), Format::Merged),
        &tiny,
        &NullSink,
        &CancelToken::new(),
    )
    .unwrap_err();
    assert!(matches!(e, ExportError::NoSpace { .. }), "{e}");
    // Cancel half-way: nothing left behind.
    struct CancelAfter(CancelToken, std::sync::atomic::AtomicUsize);
    impl ProgressSink for CancelAfter {
        fn emit(&self, e: JobEvent) {
            if matches!(e, JobEvent::Progress { .. })
                && self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 3
            {
                self.0.cancel();
            }
        }
    }
    let cancel = CancelToken::new();
    let sink = CancelAfter(cancel.clone(), Default::default());
    let e = export(
        &request(&run, &exports.join("e3"), Format::Gguf),
        &unknown_disk,
        &sink,
        &cancel,
    )
    .unwrap_err();
    assert!(matches!(e, ExportError::Cancelled), "{e}");
    let names: Vec<String> = std::fs::read_dir(&exports)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["e1".to_string()],
        "only the finished export remains"
    );
}

#[test]
fn a_diverged_run_is_refused_by_name_and_leaves_nothing() {
    let d = tempfile::tempdir().unwrap();
    let run = train_run(d.path(), "llama", lora(), 2);
    // A NaN in one adapter matrix, as a diverged run leaves.
    let weights = run.join("adapter/adapter_model.safetensors");
    let mut tensors = candle_core::safetensors::load(&weights, &Device::Cpu).unwrap();
    let key = tensors
        .keys()
        .find(|k| k.contains("layers.1.mlp.down_proj.lora_B"))
        .unwrap()
        .clone();
    let t = &tensors[&key];
    let mut v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    v[3] = f32::NAN;
    let bad = Tensor::from_vec(v, t.shape(), &Device::Cpu).unwrap();
    tensors.insert(key, bad);
    candle_core::safetensors::save(&tensors, &weights).unwrap();
    let exports = d.path().join("exports");
    for format in [Format::Gguf, Format::Merged] {
        let e = export_now(&request(&run, &exports.join("e"), format)).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("model.layers.1.mlp.down_proj.weight") && msg.contains("NaN"),
            "{format:?}: {msg}"
        );
        assert_eq!(
            std::fs::read_dir(&exports).unwrap().count(),
            0,
            "{format:?}"
        );
    }
}

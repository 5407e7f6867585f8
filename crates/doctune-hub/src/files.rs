//! Which files DocTune takes from a model repository. Only these, at the top level:
//! `*.safetensors`, `model.safetensors.index.json`, `config.json`, `generation_config.json`,
//! `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`, `tokenizer.model`
//! (SentencePiece protobuf), `chat_template.jinja` (transformers 5), and licence/README text.
//! Pickles (`*.bin`, `*.pt`, `*.pth`, `*.ckpt`, `*.pkl`) are never taken; a repository that has
//! nothing else is refused.

use crate::HubError;

/// Exact names DocTune downloads besides `*.safetensors`.
pub const ALLOWED_NAMES: [&str; 8] = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "model.safetensors.index.json",
    "chat_template.jinja",
];

/// Licence and documentation files, kept with the model for its users.
const TEXT_NAMES: [&str; 8] = [
    "LICENSE",
    "LICENSE.md",
    "LICENSE.txt",
    "LICENCE",
    "LICENCE.md",
    "README.md",
    "USE_POLICY.md",
    "NOTICE",
];

/// Extensions of Python pickle files, which can execute code when loaded.
pub const PICKLE_EXTENSIONS: [&str; 6] = ["bin", "pt", "pth", "ckpt", "pkl", "pickle"];

/// Whether DocTune downloads or imports a file of this name (a path inside the repository).
pub fn is_allowed(name: &str) -> bool {
    if name.contains('/') || name.contains('\\') || name.starts_with('.') {
        return false;
    }
    name.ends_with(".safetensors") || ALLOWED_NAMES.contains(&name) || TEXT_NAMES.contains(&name)
}

/// Whether a file is a pickle by its name.
pub fn is_pickle(name: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(_, ext)| PICKLE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()))
}

/// The allowed files of a repository listing, or why the repository is refused.
pub fn select<'a>(
    repo: &str,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<String>, HubError> {
    let names: Vec<&str> = names.into_iter().collect();
    let allowed: Vec<String> = names
        .iter()
        .filter(|n| is_allowed(n))
        .map(|n| n.to_string())
        .collect();
    if !allowed.iter().any(|n| n == "config.json") {
        return Err(HubError::NotAModel {
            repo: repo.into(),
            reason: "no config.json at the top level; not a Hugging Face model repository".into(),
        });
    }
    if !allowed.iter().any(|n| n.ends_with(".safetensors")) {
        let pickles: Vec<&str> = names.iter().copied().filter(|n| is_pickle(n)).collect();
        if !pickles.is_empty() {
            return Err(HubError::PickleOnly {
                repo: repo.into(),
                files: pickles.join(", "),
            });
        }
        return Err(HubError::NotAModel {
            repo: repo.into(),
            reason: "no .safetensors weights".into(),
        });
    }
    Ok(allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list() {
        for ok in [
            "model.safetensors",
            "model-00001-of-00002.safetensors",
            "config.json",
            "tokenizer.model",
            "chat_template.jinja",
            "LICENSE",
        ] {
            assert!(is_allowed(ok), "{ok}");
        }
        for bad in [
            "pytorch_model.bin",
            "model.pt",
            "modeling_custom.py",
            "onnx/model.onnx",
            "sub/model.safetensors",
            ".gitattributes",
            "flax_model.msgpack",
            "tf_model.h5",
        ] {
            assert!(!is_allowed(bad), "{bad}");
        }
        assert!(is_pickle("pytorch_model-00001-of-00002.bin"));
        assert!(is_pickle("x.PT"));
        assert!(!is_pickle("model.safetensors"));
    }

    #[test]
    fn selection_refuses_pickle_only_and_non_models() {
        let ok = select(
            "a/b",
            [
                "config.json",
                "model.safetensors",
                "pytorch_model.bin",
                "README.md",
            ],
        )
        .unwrap();
        assert_eq!(ok, ["config.json", "model.safetensors", "README.md"]);
        let err = select("a/b", ["config.json", "pytorch_model.bin"]).unwrap_err();
        assert!(matches!(err, HubError::PickleOnly { .. }));
        assert!(err.to_string().contains("pytorch_model.bin"), "{err}");
        assert!(err.to_string().contains("only safetensors"), "{err}");
        let err = select("a/b", ["model.safetensors"]).unwrap_err();
        assert!(err.to_string().contains("no config.json"), "{err}");
        let err = select("a/b", ["config.json"]).unwrap_err();
        assert!(err.to_string().contains("no .safetensors"), "{err}");
    }
}

//! The model families DocTune supports, by the `architectures` value of a Hugging Face
//! `config.json`. Shared by model import (validation) and the model layer (loading).

use serde::{Deserialize, Serialize};

/// A supported model family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    Phi3,
    Gemma2,
}

/// `architectures` values DocTune loads, and their family.
pub const SUPPORTED: [(&str, Family); 6] = [
    ("LlamaForCausalLM", Family::Llama),
    ("MistralForCausalLM", Family::Mistral),
    ("Qwen2ForCausalLM", Family::Qwen2),
    ("Qwen3ForCausalLM", Family::Qwen3),
    ("Phi3ForCausalLM", Family::Phi3),
    ("Gemma2ForCausalLM", Family::Gemma2),
];

impl Family {
    /// The family of an `architectures` value, if DocTune supports it.
    pub fn from_architecture(arch: &str) -> Option<Family> {
        SUPPORTED.iter().find(|(a, _)| *a == arch).map(|(_, f)| *f)
    }

    /// A name for people ("Llama", "Qwen2").
    pub fn label(self) -> &'static str {
        match self {
            Family::Llama => "Llama",
            Family::Mistral => "Mistral",
            Family::Qwen2 => "Qwen2",
            Family::Qwen3 => "Qwen3",
            Family::Phi3 => "Phi-3",
            Family::Gemma2 => "Gemma 2",
        }
    }
}

/// "LlamaForCausalLM, MistralForCausalLM, …" for error messages.
pub fn supported_list() -> String {
    SUPPORTED.map(|(a, _)| a).join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup() {
        assert_eq!(
            Family::from_architecture("Qwen3ForCausalLM"),
            Some(Family::Qwen3)
        );
        assert_eq!(Family::from_architecture("GPT2LMHeadModel"), None);
        assert!(supported_list().starts_with("LlamaForCausalLM, MistralForCausalLM"));
    }
}

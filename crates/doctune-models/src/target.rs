//! The projections LoRA can adapt, named as PEFT users name them (`q`, `k`, `v`, `o`, `gate`,
//! `up`, `down`), and how a name selects a module of each family (Phi-3's fused projections).

/// A list of LoRA targets that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("unknown LoRA target `{0}` (use q, k, v, o, gate, up, down or all)")]
    Unknown(String),
    #[error("no LoRA targets given")]
    Empty,
}

/// The projections LoRA can target, by the names PEFT users know.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Target {
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    /// `q`, `k`, `v`, `o`, `gate`, `up`, `down` (also with a `_proj` suffix).
    pub fn parse(s: &str) -> Option<Target> {
        Some(match s.trim().trim_end_matches("_proj") {
            "q" => Target::Q,
            "k" => Target::K,
            "v" => Target::V,
            "o" => Target::O,
            "gate" => Target::Gate,
            "up" => Target::Up,
            "down" => Target::Down,
            _ => return None,
        })
    }

    /// A comma-separated list, e.g. `q,v` or `all`.
    pub fn parse_list(s: &str) -> Result<Vec<Target>, TargetError> {
        if s.trim() == "all" {
            return Ok(Target::ALL.to_vec());
        }
        let mut out = Vec::new();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let t = Target::parse(part).ok_or_else(|| TargetError::Unknown(part.trim().into()))?;
            if !out.contains(&t) {
                out.push(t);
            }
        }
        if out.is_empty() {
            return Err(TargetError::Empty);
        }
        Ok(out)
    }

    pub fn name(self) -> &'static str {
        match self {
            Target::Q => "q",
            Target::K => "k",
            Target::V => "v",
            Target::O => "o",
            Target::Gate => "gate",
            Target::Up => "up",
            Target::Down => "down",
        }
    }

    /// Whether this target selects module `module` (Phi-3's fused `qkv_proj` is selected by
    /// any of q, k, v and `gate_up_proj` by gate or up: one adapter on the fused matrix, as
    /// PEFT's Phi-3 targets do).
    pub fn selects(self, module: &str) -> bool {
        match module {
            "qkv_proj" => matches!(self, Target::Q | Target::K | Target::V),
            "gate_up_proj" => matches!(self, Target::Gate | Target::Up),
            m => m.trim_end_matches("_proj") == self.name(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_dedupe_and_name_the_bad_part() {
        assert_eq!(
            Target::parse_list("q, v_proj,q").unwrap(),
            vec![Target::Q, Target::V]
        );
        assert_eq!(Target::parse_list("all").unwrap().len(), 7);
        assert_eq!(
            Target::parse_list("q,x").unwrap_err().to_string(),
            "unknown LoRA target `x` (use q, k, v, o, gate, up, down or all)"
        );
        assert_eq!(Target::parse_list(" , ").unwrap_err(), TargetError::Empty);
        assert!(Target::Q.selects("qkv_proj") && Target::Up.selects("gate_up_proj"));
        assert!(!Target::O.selects("qkv_proj"));
    }
}

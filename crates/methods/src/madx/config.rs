use serde::{Deserialize, Serialize};

/// What a MAD-X language module is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LanguageModule {
    /// A sequential bottleneck adapter after each block's MLP, under the task adapter (MAD-X).
    #[default]
    Bottleneck,
    /// LoRA on each block's query and value projections (a LoRA language adapter).
    Lora,
}

/// MAD-X hyper-parameters. Defaults from the paper: language adapters with reduction factor 2
/// (bottleneck = hidden/2), invertible adapters with reduction 2, task adapters with reduction 16,
/// all ReLU in the Pfeiffer placement (after the MLP).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MadxConfig {
    /// hidden / bottleneck of the language adapters.
    pub language_reduction: usize,
    /// hidden / bottleneck of the task adapters.
    pub task_reduction: usize,
    /// Reduction of the invertible adapter's coupling networks (relative to half the hidden size).
    pub invertible_reduction: usize,
    /// A trained MAD-X adapter folder whose language and invertible adapters are reused, frozen;
    /// `null` trains them first (phase `language`) on the task data, then freezes them.
    pub language_adapter: Option<String>,
    /// Epochs of the language phase (`null` = the recipe's).
    pub language_epochs: Option<usize>,
    /// The language module: `bottleneck` (MAD-X's) or `lora`.
    pub language_module: LanguageModule,
    /// Rank of a `lora` language module (alpha 2r).
    pub language_lora_r: usize,
    /// Whether an invertible adapter transforms the token embeddings (MAD-X's invertible
    /// bottleneck; `false` leaves the language module alone).
    pub invertible: bool,
}

impl Default for MadxConfig {
    fn default() -> Self {
        Self {
            language_reduction: 2,
            task_reduction: 16,
            invertible_reduction: 2,
            language_adapter: None,
            language_epochs: None,
            language_module: LanguageModule::Bottleneck,
            language_lora_r: 8,
            invertible: true,
        }
    }
}

impl MadxConfig {
    pub fn check(&self) -> Result<(), String> {
        for (field, value) in [
            ("language_reduction", self.language_reduction),
            ("task_reduction", self.task_reduction),
            ("invertible_reduction", self.invertible_reduction),
            ("language_lora_r", self.language_lora_r),
        ] {
            if value == 0 {
                return Err(format!(
                    "method `madx`: {field} must be at least 1 (and at most the hidden size)"
                ));
            }
        }
        if self.language_epochs == Some(0) {
            return Err("method `madx`: language_epochs must be at least 1".into());
        }
        Ok(())
    }

    /// Bottleneck widths for `hidden`, or an error naming the reduction that leaves nothing.
    pub fn widths(&self, hidden: usize) -> Result<(usize, usize, usize), String> {
        let half = hidden / 2;
        let widths = (
            hidden / self.language_reduction,
            hidden / self.task_reduction,
            half / self.invertible_reduction,
        );
        if self.invertible && !hidden.is_multiple_of(2) {
            return Err(format!("method `madx`: the invertible adapter splits the hidden size in halves; {hidden} is odd"));
        }
        if widths.0 == 0 || widths.1 == 0 || (self.invertible && widths.2 == 0) {
            return Err(format!(
                "method `madx`: reductions ({}, {}, {}) leave an empty bottleneck for hidden size {hidden}; allowed: language/task 1..={hidden}, invertible 1..={half}",
                self.language_reduction, self.task_reduction, self.invertible_reduction
            ));
        }
        Ok(widths)
    }
}

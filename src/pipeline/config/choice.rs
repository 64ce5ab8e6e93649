//! The enum-valued settings of a pipeline file, parsed into enums once, when the file
//! is read: an unknown word is reported at its key (with every other problem) and
//! nothing downstream matches on strings.

use std::fmt;

/// Declares a setting's enum: its words in the file, its default, `as_str`, `FromStr` (an unknown
/// word says which words are allowed), and serde (as the word). `Debug` prints the
/// word as a string's `Debug` would, so configuration fingerprints (which hash the
/// `Debug` form of `[model]`) are what they were when these settings were strings.
macro_rules! choice {
    ($(#[$meta:meta])* $name:ident (default $default:ident) { $($(#[$vmeta:meta])* $variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        /// The setting's value when the file does not give it.
        impl Default for $name {
            fn default() -> Self {
                $name::$default
            }
        }

        impl $name {
            /// Every word the file may use, in the order the docs list them.
            pub const WORDS: &'static [&'static str] = &[$($word),+];

            /// The word in the file.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($word => Ok($name::$variant),)+
                    other => Err(not_one_of(other, Self::WORDS)),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.as_str(), f)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// The message of an unknown word; [`is_unknown_word`] recognises it.
fn not_one_of(word: &str, words: &[&str]) -> String {
    format!("{word:?} {NOT_ONE_OF} {}", words.join(", "))
}

const NOT_ONE_OF: &str = "is not one of";

/// Whether a deserialisation error's message is a choice's unknown word (so the file
/// reader can report it at its key and read on).
pub fn is_unknown_word(message: &str) -> bool {
    message.starts_with('"') && message.contains(NOT_ONE_OF)
}

choice! {
    /// `model.kind`.
    ModelKind (default Linear) { Linear = "linear", Mlp = "mlp", Rls = "rls", Lstm = "lstm", Cnn1d = "cnn1d" }
}

impl ModelKind {
    /// The sequence models (fed `window` rows at once).
    pub fn is_sequence(self) -> bool {
        matches!(self, ModelKind::Lstm | ModelKind::Cnn1d)
    }
}

choice! {
    /// `model.optimizer`.
    OptimizerChoice (default Auto) { Auto = "auto", Sgd = "sgd", AdamW = "adamw", Nlms = "nlms" }
}

choice! {
    /// `model.loss`.
    LossKind (default Mse) { Mse = "mse", Huber = "huber", HlGauss = "hl_gauss" }
}

choice! {
    /// `model.activation`: the MLP's hidden non-linearity.
    Activation (default Relu) { Relu = "relu", Tanh = "tanh" }
}

choice! {
    /// `model.replay_policy`: which past labelled examples are replayed.
    ReplayPolicy (default Recent) {
        /// The last `replay_capacity`.
        Recent = "recent",
        /// A uniform sample of all seen (reservoir sampling).
        Reservoir = "reservoir",
    }
}

choice! {
    /// `model.drift`: the drift detector on the absolute residuals.
    DriftDetector (default None) { None = "none", PageHinkley = "page_hinkley", Adwin = "adwin" }
}

choice! {
    /// `model.drift_action`: what a detected drift does.
    DriftResponse (default Log) { Log = "log", ResetOptimizer = "reset_optimizer", RaiseLr = "raise_lr" }
}

choice! {
    /// `model.scope`: one model per input partition, or one per key.
    Scope (default Global) { Global = "global", PerKey = "per_key" }
}

choice! {
    /// `model.output`: the target's level at t+h, or its change from t.
    Output (default Level) { Level = "level", Change = "change" }
}

choice! {
    /// `model.aggregate`: the online mixture of the experts.
    Aggregate (default None) { None = "none", MlPoly = "mlpoly", AdaHedge = "adahedge" }
}

choice! {
    /// `model.aggregate_loss`: the loss the aggregation weights follow (linearised).
    AggLoss (default Absolute) {
        /// |ŷ − y|: gradient sign(ŷ − y). Tracks MAE (the metric of record).
        Absolute = "absolute",
        /// (ŷ − y)²: gradient 2(ŷ − y).
        Square = "square",
    }
}

choice! {
    /// `model.device`, `[tracker] device`: `auto` is CUDA where present.
    DeviceChoice (default Cpu) { Cpu = "cpu", Cuda = "cuda", Auto = "auto" }
}

choice! {
    /// `model.precision`: the float type of the weights, optimizer moments and passes
    /// (`lstm` only). Inputs and published forecasts stay f64.
    Precision (default F64) {
        /// The default: the bits the checkpoints and the candle reference pin.
        F64 = "f64",
        /// Half the memory per key and twice the SIMD lanes; about 7 significant digits.
        F32 = "f32",
    }
}

choice! {
    /// `sink.delivery`.
    Delivery (default Idempotent) { Idempotent = "idempotent", Transactional = "transactional" }
}

/// `model.baseline`: what the model learns relative to — nothing (the default),
/// persistence, the seasonal-naive forecast, or a numeric column of the feature SQL's
/// output (resolved against that output when the model stage is built).
#[derive(Clone, Default, PartialEq, Eq)]
pub enum BaselineChoice {
    #[default]
    None,
    Persistence,
    Seasonal,
    Column(String),
}

impl BaselineChoice {
    /// The word or column name in the file.
    pub fn as_str(&self) -> &str {
        match self {
            BaselineChoice::None => "none",
            BaselineChoice::Persistence => "persistence",
            BaselineChoice::Seasonal => "seasonal",
            BaselineChoice::Column(c) => c,
        }
    }
}

impl From<&str> for BaselineChoice {
    fn from(s: &str) -> Self {
        match s {
            "none" => BaselineChoice::None,
            "persistence" => BaselineChoice::Persistence,
            "seasonal" => BaselineChoice::Seasonal,
            col => BaselineChoice::Column(col.to_string()),
        }
    }
}

impl fmt::Debug for BaselineChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<'de> serde::Deserialize<'de> for BaselineChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(BaselineChoice::from(String::deserialize(d)?.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_parse_to_their_variants_and_back() {
        for w in ModelKind::WORDS {
            assert_eq!(w.parse::<ModelKind>().unwrap().as_str(), *w);
        }
        assert_eq!("per_key".parse::<Scope>(), Ok(Scope::PerKey));
        let e = "bogus".parse::<ReplayPolicy>().unwrap_err();
        assert_eq!(e, "\"bogus\" is not one of recent, reservoir");
        assert!(is_unknown_word(&e));
        assert!(!is_unknown_word("missing field `target`"));
    }

    #[test]
    fn debug_is_the_word_as_a_string_so_fingerprints_do_not_move() {
        assert_eq!(format!("{:?}", ModelKind::Cnn1d), format!("{:?}", "cnn1d"));
        assert_eq!(format!("{:?}", BaselineChoice::from("mid")), format!("{:?}", "mid"));
        assert_eq!(format!("{:?}", BaselineChoice::Seasonal), format!("{:?}", "seasonal"));
    }
}
